#!/usr/bin/env bash
# Prove that every package of a requirements file has a wheel for each platform the image is built for, on
# the base image's Python: the DGX Spark (aarch64) and x86_64 servers. An sdist-only or x86-only package
# (decord, say) fails here with uv's "no wheels with a matching platform tag", before any image build does.
#
#   docker/check-wheels.sh REQUIREMENTS [UV]
set -euo pipefail
requirements="$1"
uv="${2:-uv}"
python_version="${IMAGE_PYTHON:-3.11}"  # Debian bookworm's python3, the image's Python
platforms="${WHEEL_PLATFORMS:-aarch64-manylinux_2_28 x86_64-manylinux_2_28}"
count="$(grep -cvE '^\s*(#|$)' "$requirements")"
for platform in $platforms; do
    # --no-deps: the file is already a full, pinned closure; each pin only has to exist as a wheel.
    "$uv" pip compile --quiet --no-deps --only-binary :all: --python-platform "$platform" \
        --python-version "$python_version" "$requirements" --output-file /dev/null
    echo "wheels: all ${count} pinned packages have ${platform} wheels for Python ${python_version}"
done
