#!/usr/bin/env bash
# Container entrypoint: check the mounted folders, then run the command (Streamlit by default) under
# core.supervise, which turns `docker compose down` into a stop request for this container's trainers
# and waits for their checkpoints before the container exits (see docs/containers.md).
# NVIDIA's entrypoint, when the base image has it, goes in between: it sets up CUDA forward compatibility.
set -euo pipefail

runs_dir="${VLM_RUNS_DIR:-/app/runs}"
if ! mkdir -p "${runs_dir}" 2>/dev/null || ! [ -w "${runs_dir}" ]; then
    cat >&2 <<MSG
[vlm-playbook] ${runs_dir} is not writable by uid $(id -u). Runs, adapters and the GPU lock live there.
[vlm-playbook] On the host, from the repository folder:  mkdir -p runs data && sudo chown -R 1000:1000 runs data
MSG
fi

if [ -x /opt/nvidia/nvidia_entrypoint.sh ]; then
    exec /opt/nvidia/nvidia_entrypoint.sh python -m core.supervise -- "$@"
fi
exec python -m core.supervise -- "$@"
