"""Merge a video run's LoRA adapter into a standalone Hugging Face model.

    python -m video_vlm.export --run runs/video-... [--out DIR]

Writes `<run>/merged/` (safetensors + processor) by default and keeps `adapter/` (the work is core.export's).
"""

from __future__ import annotations

import sys

from core.export import export_main
from video_vlm.config import VideoConfig


def main(argv=None) -> int:
    return export_main(argv, VideoConfig, __doc__)


if __name__ == "__main__":
    sys.exit(main())
