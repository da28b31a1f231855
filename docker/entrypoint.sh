#!/usr/bin/env bash
# Container entrypoint: check the mounted runs folder and the NVIDIA driver, then run the command (Streamlit by
# default) under core.supervise, which turns `docker compose down` into a stop request for this container's
# trainers and waits for their checkpoints before the container exits (see docs/containers.md).
# Each problem gets one line and the app still starts: an exit here would turn into a restart loop under
# compose's `restart: unless-stopped`, with the message scrolling away.
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

exec python -m core.supervise -- "$@"
