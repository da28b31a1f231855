"""Checking and saving files people upload in the compare panel.

Every upload is untrusted: its name is rewritten with `safe_filename`, its size is checked before it is
written, and it is decoded once (image) or probed (video) before any model sees it. Problems come back as
an `UploadError` whose message is shown as is.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
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


# Uploads are kept for a day at most, and the oldest go first past the quota: a shared box's disk is not a
# dumping ground. Video is capped by what its container declares, before a decoder allocates any frame.
UPLOAD_MAX_AGE_S = 24 * 3600
UPLOAD_QUOTA_MB = 2048
MAX_VIDEO_PIXELS = 3840 * 2160  # 4K UHD, 8.3 megapixels
MAX_VIDEO_FRAMES = 30 * 60 * 10  # ten minutes at 30 frames a second
MAX_VIDEO_SECONDS = 600.0

_roots: dict[str, Path] = {}


def upload_root() -> Path:
    """This server's private folder for uploads and generated samples, under the temporary folder.

    `mkdtemp` makes it with a fresh name and mode 0700, so no other local user can create it first or read it;
    it is removed when the server exits. One per temporary folder (tests give each test its own).
    """
    base = tempfile.gettempdir()
    root = _roots.get(base)
    if root is None or not root.is_dir():
        root = Path(tempfile.mkdtemp(prefix="vlm-ui-uploads-", dir=base))
        _roots[base] = root
        atexit.register(shutil.rmtree, root, True)
    return root


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def sweep_uploads(root: Path, max_age_s: float = UPLOAD_MAX_AGE_S, quota_mb: float = UPLOAD_QUOTA_MB) -> list[Path]:
    """Remove upload folders older than `max_age_s`, then the oldest until the rest fit in `quota_mb`; returns
    what was removed. Generated samples (`samples-*`) stay: the gallery needs them.

    >>> import os, time
    >>> root = Path(tempfile.mkdtemp())
    >>> for name, age in (("old", 90000), ("new", 0), ("samples-image", 90000)):
    ...     (root / name).mkdir(); _ = (root / name / "a.png").write_bytes(b"x" * 10)
    ...     os.utime(root / name, (time.time() - age, time.time() - age))
    >>> [p.name for p in sweep_uploads(root)], sorted(p.name for p in root.iterdir())
    (['old'], ['new', 'samples-image'])
    """
    now = time.time()
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith("samples-")), key=lambda p: p.stat().st_mtime
    )
    removed = [p for p in folders if now - p.stat().st_mtime > max_age_s]
    kept = [p for p in folders if p not in removed]
    sizes = {p: folder_size(p) for p in kept}
    while kept and sum(sizes[p] for p in kept) > quota_mb * MB:
        removed.append(kept.pop(0))
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


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
    if own_folder:
        sweep_uploads(upload_root())
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
        if isinstance(error, UploadError):
            raise
        if kind == "image" and isinstance(error, MediaError):
            raise UploadError(str(error)) from None
        # Video decoders name the server's temporary path and raw error numbers: say it in the file's own terms.
        raise UploadError(
            f"{safe}: cannot be read as {'an' if kind[0] in 'aeiou' else 'a'} {kind}: the file is damaged, "
            f"or it is not a {'/'.join(s.lstrip('.') for s in suffixes)} file"
        ) from None
    return SavedUpload(path=path, name=safe, original_name=name, size=len(data))


def video_caps_problem(width: int, height: int, num_frames: int, duration_s: float) -> str | None:
    """Why a video is too large to decode on the web server, from its container's header; None when it is not.

    >>> video_caps_problem(8192, 8192, 12, 0.5)
    '8192×8192 is past the 8.3-megapixel limit (3840×2160 at most)'
    >>> video_caps_problem(640, 480, 100000, 3333.3)
    '100000 frames is past the 18000-frame limit'
    >>> video_caps_problem(640, 480, 0, 3600.0), video_caps_problem(1920, 1080, 300, 10.0)
    ('3600 s is past the 600-second limit', None)
    """
    if width * height > MAX_VIDEO_PIXELS:
        return f"{width}×{height} is past the {MAX_VIDEO_PIXELS / 1e6:.1f}-megapixel limit (3840×2160 at most)"
    if num_frames > MAX_VIDEO_FRAMES:
        return f"{num_frames} frames is past the {MAX_VIDEO_FRAMES}-frame limit"
    if duration_s > MAX_VIDEO_SECONDS:
        return f"{duration_s:.0f} s is past the {MAX_VIDEO_SECONDS:.0f}-second limit"
    return None


def check_video(path: Path, label: str) -> None:
    """Cap a saved video by its declared size, length and frame count before any frame is decoded, then probe it
    and decode one frame, so a broken clip fails here rather than in the model."""
    from core.media.video import probe_video, read_frames, read_video_header

    header = read_video_header(path)
    problem = video_caps_problem(header.width, header.height, header.num_frames, header.duration_s)
    if problem:
        raise UploadError(f"{label}: {problem}")
    info = probe_video(path)
    if info.num_frames < 1:
        raise MediaError(f"{label}: the video has no frames")
    read_frames(path, 1, max_side=64)
