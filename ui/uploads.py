"""Checking and saving files people upload in the compare panel.

Every upload is untrusted: its name is rewritten with `safe_filename`, its size is checked before it is
written, and it is decoded once (image) or probed (video) before any model sees it. Problems come back as
an `UploadError` whose message is shown as is.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.media.errors import MediaError
from core.media.image import open_image, safe_filename

MB = 1024 * 1024


class UploadError(ValueError):
    """An upload that cannot be used; the message says why and what is accepted."""


@dataclass(frozen=True)
class SavedUpload:
    """An upload that passed the checks: where it was saved and under which (safe) name."""

    path: Path
    name: str
    original_name: str
    size: int

    @property
    def renamed(self) -> bool:
        return self.name != self.original_name


def upload_root() -> Path:
    """A private temporary folder for this server's uploads."""
    root = Path(tempfile.gettempdir()) / "vlm-ui-uploads"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


def describe_size(size: int) -> str:
    """
    >>> describe_size(0), describe_size(2048), describe_size(25 * MB)
    ('0 bytes', '2.0 KB', '25.0 MB')
    """
    if size < 1024:
        return f"{size} bytes"
    if size < MB:
        return f"{size / 1024:.1f} KB"
    return f"{size / MB:.1f} MB"


def check_upload(name: str, size: int, suffixes: tuple[str, ...], limit_mb: int, kind: str) -> str:
    """Check an upload's name and size before reading it; returns the safe file name.

    >>> check_upload("../../etc/fire.PNG", 100, (".png",), 20, "image")
    'fire.png'
    >>> check_upload("notes.txt", 100, (".png", ".jpg"), 20, "image")
    Traceback (most recent call last):
    ...
    ui.uploads.UploadError: notes.txt: .txt files are not accepted; upload an image file (.png, .jpg)
    >>> check_upload("a.png", 0, (".png",), 20, "image")
    Traceback (most recent call last):
    ...
    ui.uploads.UploadError: a.png: the file is empty (0 bytes)
    """
    shown = safe_filename(name or "upload")
    safe = shown
    suffix = Path(safe).suffix.lower()
    allowed = ", ".join(suffixes)
    if suffix not in suffixes:
        what = f"{suffix} files are" if suffix else "files without a suffix are"
        raise UploadError(f"{shown}: {what} not accepted; upload {'an' if kind[0] in 'aeiou' else 'a'} {kind} file ({allowed})")
    if size <= 0:
        raise UploadError(f"{shown}: the file is empty (0 bytes)")
    if size > limit_mb * MB:
        raise UploadError(f"{shown}: {describe_size(size)} is over the {limit_mb} MB limit for {kind} uploads")
    return safe


def save_upload(
    name: str,
    data: bytes,
    suffixes: tuple[str, ...],
    limit_mb: int,
    kind: str,
    folder: Path | None = None,
) -> SavedUpload:
    """Check an upload, write it under a fresh private folder and prove it decodes.

    Args:
        name: The name the browser sent (untrusted).
        data: The file's bytes.
        suffixes: Accepted suffixes, lower case with the dot.
        limit_mb: Largest accepted size.
        kind: "image" or "video": how the file is checked after saving.
        folder: Where to save; a new folder under the temporary upload root by default.

    Raises:
        UploadError: Wrong type, empty, too large, or not decodable; nothing is left on disk.
    """
    safe = check_upload(name, len(data), suffixes, limit_mb, kind)
    own_folder = folder is None  # a folder made here for this upload goes again when the upload is refused
    folder = folder or upload_root() / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe
    # The safe name has no separators, but refuse anything that would still land outside the folder.
    if path.resolve().parent != folder.resolve():
        raise UploadError(f"{safe}: refusing a file name that points outside the upload folder")
    path.write_bytes(data)
    try:
        if kind == "image":
            open_image(data, name=safe)
        else:
            check_video(path, safe)
    except Exception as error:  # noqa: BLE001 - a decoder crash on hostile bytes is still just a bad upload.
        path.unlink(missing_ok=True)
        if own_folder:
            shutil.rmtree(folder, ignore_errors=True)
        if kind == "image" and isinstance(error, MediaError):
            raise UploadError(str(error)) from None
        # Video decoders name the server's temporary path and raw error numbers: say it in the file's own terms.
        raise UploadError(
            f"{safe}: cannot be read as {'an' if kind[0] in 'aeiou' else 'a'} {kind}: the file is damaged, "
            f"or it is not a {'/'.join(s.lstrip('.') for s in suffixes)} file"
        ) from None
    return SavedUpload(path=path, name=safe, original_name=name, size=len(data))


def check_video(path: Path, label: str) -> None:
    """Probe a saved video and decode one frame, so a broken clip fails here rather than in the model."""
    from core.media.video import probe_video, read_frames

    info = probe_video(path)
    if info.num_frames < 1:
        raise MediaError(f"{label}: the video has no frames")
    read_frames(path, 1, max_side=64)
