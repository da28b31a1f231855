#!/usr/bin/env bash
# Container entrypoint: check the mounted runs folder, the NVIDIA driver and who can reach the page, then run the
# command (Streamlit by default) under core.supervise, which turns `docker compose down` into a stop request for this
# container's trainers and waits for their checkpoints before the container exits (see docs/containers.md).
# Each problem gets one line (an open page with no password, a banner) and the app still starts: an exit here would
# turn into a restart loop under compose's `restart: unless-stopped`, with the message scrolling away.
set -euo pipefail

say() { echo "[vlm-playbook] $*" >&2; }

runs_dir="${VLM_RUNS_DIR:-/app/runs}"
if ! mkdir -p "${runs_dir}" 2>/dev/null || ! [ -w "${runs_dir}" ]; then
    say "${runs_dir} is not writable by uid $(id -u): training cannot start (runs, adapters and the GPU lock live there)."
    say "On the host, from the repository folder:  mkdir -p runs data && sudo chown -R 1000:1000 runs data"
fi

# PyPI's torch 2.15 is a CUDA 13 build: it needs NVIDIA driver 580 or newer. Say so once, here, rather than
# as a torch traceback in the middle of a run.
min_driver=580
if ! command -v nvidia-smi >/dev/null 2>&1; then
    say "no NVIDIA GPU visible: running on CPU (on a GPU host, install the NVIDIA Container Toolkit and keep the compose file's GPU reservation)"
else
    driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ' || true)"
    major="${driver%%.*}"
    if [ -z "${driver}" ] || ! [[ "${major}" =~ ^[0-9]+$ ]]; then
        say "no NVIDIA GPU visible (nvidia-smi found no driver): running on CPU"
    elif [ "${major}" -lt "${min_driver}" ]; then
        say "NVIDIA driver ${driver} is too old for this image's CUDA 13 (torch 2.15 needs driver >= ${min_driver}): running on CPU. Upgrade the host driver to ${min_driver} or newer (DGX OS 7 ships it), then restart."
    fi
fi

# The box is shared: a page served beyond loopback with no sign-in lets anyone who reaches the port start jobs on
# the GPU and read every run. Say so loudly (a banner, not one line that scrolls away) but still start: exposing
# the port can be deliberate, behind a reverse proxy that signs people in (docs/security.md).
is_loopback() {
    case "$1" in
        127.*|localhost|::1|"[::1]") return 0 ;;
        *) return 1 ;;
    esac
}

# Where this Streamlit can be reached from outside the container, or nothing when only from this machine's
# loopback. Streamlit listens on STREAMLIT_SERVER_ADDRESS, or on --server.address in the command, and on every
# interface when neither is set. On every interface of the container, what reaches it is the published port:
# compose hands its BIND_ADDRESS in; a `docker run -p` without it publishes on every host interface.
exposed_address() {
    local command=" $* " listen="${STREAMLIT_SERVER_ADDRESS:-}"
    [[ "${command}" == *" streamlit run "* || "${command}" == *"/streamlit run "* ]] || return 0
    if [[ "${command}" =~ --server\.address[=[:space:]]+([^[:space:]\"\']+) ]]; then
        listen="${BASH_REMATCH[1]}"
    fi
    if is_loopback "${listen}"; then
        return 0
    fi
    if [ -n "${BIND_ADDRESS:-}" ] && is_loopback "${BIND_ADDRESS}"; then
        return 0
    fi
    echo "${BIND_ADDRESS:-${listen:-0.0.0.0}}"
}

exposed="$(exposed_address "$@")"
if [ -n "${exposed}" ] && [ -z "${VLM_UI_PASSWORD:-}" ]; then
    rule="################################################################################################"
    say "${rule}"
    say "WARNING: this app is served beyond loopback (${exposed}) and asks for NO password."
    say "Anyone who can reach the port can start training jobs on the GPU and read every run's config, logs"
    say "and metrics. Set VLM_UI_PASSWORD in .env and recreate the container (docker compose up -d), or keep"
    say "BIND_ADDRESS=127.0.0.1 and reach the app through an SSH tunnel. See docs/security.md."
    say "${rule}"
fi

exec python -m core.supervise -- "$@"
