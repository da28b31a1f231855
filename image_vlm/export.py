"""Merge an image run's LoRA adapter into a standalone Hugging Face model.

    python -m image_vlm.export --run runs/image-... [--out DIR]

Writes `<run>/merged/` (safetensors + processor) by default and keeps `adapter/` (the work is core.export's).
"""

from __future__ import annotations

import sys

from core.export import export_main
from image_vlm.config import ImageConfig


def main(argv=None) -> int:
    return export_main(argv, ImageConfig, __doc__)


if __name__ == "__main__":
    sys.exit(main())
