"""Merge a video run's LoRA adapter into a standalone Hugging Face model.

    python -m video_vlm.export --run runs/video-... [--out DIR]

Writes `<run>/merged/` (safetensors + processor) by default and keeps `adapter/`. The work is the image
recipe's export, read with the video config.
"""

from __future__ import annotations

import sys

from image_vlm.export import main as export_main
from video_vlm.config import VideoConfig


def main(argv=None) -> int:
    return export_main(argv, config_cls=VideoConfig)


if __name__ == "__main__":
    sys.exit(main())
