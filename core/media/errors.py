"""The one error type media code raises, so callers can show a clear message instead of a traceback."""


class MediaError(ValueError):
    """A file that cannot be used as an image or video. The message names the file and the problem."""
