#!/usr/bin/env bash
# The image's third-party requirements: uv.lock exported with the gpu extra, minus what the NGC base image
# provides (torch, torchvision, torchaudio, triton and the nvidia-*/cuda-* wheels stay its own builds).
# Used by the Dockerfile to install, and by `make wheels-check` to prove every one has a wheel on both platforms.
#
#   docker/image-requirements.sh OUT [UV]
set -euo pipefail
out="$1"
uv="${2:-uv}"
locked="$(mktemp)"
trap 'rm -f "$locked"' EXIT
"$uv" export --frozen --no-hashes --no-header --no-annotate --no-emit-project --no-dev --extra gpu \
    --format requirements-txt --output-file "$locked" --quiet
grep -viE '^(torch|torchvision|torchaudio|triton)([ =;[]|$)|^(nvidia-|cuda-)' "$locked" > "$out"
grep -qiE '^transformers==' "$out"
! grep -qiE '^(torch|torchvision|triton)==' "$out"
