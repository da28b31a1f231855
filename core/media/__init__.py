"""Media decoding shared by training, evaluation and inference: images (`image.py`) and video frames (`video.py`)."""

from core.media.errors import MediaError

__all__ = ["MediaError"]
