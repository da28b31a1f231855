"""The one error type media code raises, so callers can show a clear message instead of a traceback."""

import re

# "[Errno 1094995529] " as OSError and PyAV's FFmpegError start their text: a number no reader can use.
_ERRNO_PREFIX = re.compile(r"^\[Errno -?\d+\]\s*")


class MediaError(ValueError):
    """A file that cannot be used as an image or video. The message names the file and the problem."""


def plain_reason(error: BaseException) -> str:
    """The words of an OS or FFmpeg error, without its errno number or the file name the message already has.

    >>> plain_reason(FileNotFoundError(2, "No such file or directory", "clip.mp4"))
    'No such file or directory'
    """
    reason = getattr(error, "strerror", None)
    if isinstance(reason, str) and reason:
        return reason
    return _ERRNO_PREFIX.sub("", str(error)) or type(error).__name__
