#!/usr/bin/env bash
# The image's third-party requirements: uv.lock exported with the gpu extra, as the Dockerfile's `uv sync --frozen
# --extra gpu` installs it, torch and the nvidia-*-cu13 wheels included (the image is the lock).
# Used by `make wheels-check` to prove every one has a wheel on both platforms.
#
#   docker/image-requirements.sh OUT [UV]
set -euo pipefail
out="$1"
uv="${2:-uv}"
"$uv" export --frozen --no-hashes --no-header --no-annotate --no-emit-project --no-dev --extra gpu \
    --format requirements-txt --output-file "$out" --quiet
grep -qiE '^transformers==' "$out"
grep -qiE '^torch==' "$out"
