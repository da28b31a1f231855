"""Open untrusted image files safely and hand back plain RGB pictures.

Every image the recipes touch (dataset files, Streamlit uploads, inference
inputs) goes through `open_image`, so a broken file fails the same way
everywhere: with a `MediaError` whose message names the file and the problem.
"""

from __future__ import annotations

import io
import re
import struct
import threading
import unicodedata
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.media.errors import MediaError, plain_reason

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "open_image", "safe_filename"]

# Every format open_image decodes (GIF: its first frame), so a dataset keeps all the files it can read.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

# 64 megapixels is far above any satellite tile or photo we train on, and well
# below the size where decoding one file could exhaust memory.
DEFAULT_MAX_PIXELS = 64_000_000

# Formats that photos and satellite tiles come in. Anything else is refused unread:
# Pillow's rarer plug-ins are less hardened, and EPS would even start Ghostscript.
_ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # JPEG also yields camera MPO files.
_WARNING_FILTERS_LOCK = threading.Lock()

# Pillow can decode these modes but Image.convert("RGB") handles their bit depth badly
# (16-bit values are clipped at 255, float values lose their scale).
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def open_image(
    source: str | Path | bytes | BinaryIO,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode an image fully and return it as an RGB `PIL.Image.Image`.

    The file is checked twice: `verify()` catches structural damage (bad PNG
    checksums, for instance), then a fresh decode with `load()` catches files
    cut short. Animated images give their first frame, EXIF orientation is
    applied, and transparency is flattened onto white.

    Args:
        source: A path, the raw bytes, or a binary file object.
        name: What to call the file in error messages; defaults to the path or
            the file object's name.
        max_pixels: Largest accepted width x height; larger images are
            rejected before their pixels are decoded (decompression bombs).

    Returns:
        A fully loaded RGB image, detached from any file handle.

    Raises:
        MediaError: Missing, empty, non-image, corrupt, truncated or oversized input.
    """
    label = name or _describe(source)
    # No file within the pixel limit can be bigger than its uncompressed pixels (8 bytes for 16-bit RGBA).
    data = _read_bytes(source, label, max_bytes=max_pixels * 8 + (16 << 20))
    if not data:
        raise MediaError(f"{label}: empty file (0 bytes)")

    try:
        with _open_header(data, label, max_pixels) as probe:
            probe.verify()
        # verify() leaves the image unusable, so decode again from the start.
        with _open_header(data, label, max_pixels) as image:
            image.seek(0)  # First frame of an animation.
            image.load()
            return _to_rgb(_apply_exif_orientation(image), label)
    except MediaError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as error:
        # Pillow signals damaged data with any of these, depending on the format plug-in.
        raise MediaError(f"{label}: truncated or corrupt image ({plain_reason(error)})") from error
    except MemoryError as error:
        raise MediaError(f"{label}: image too large to decode in memory") from error


def safe_filename(name: str) -> str:
    """Turn an uploaded file name into one that is safe to write inside a folder.

    Directories, `..`, control characters and anything but ASCII letters,
    digits, `-`, `_` and `.` are removed; the suffix is kept (lower-cased) and
    the result is never empty, never hidden and never a Windows device name.

    >>> safe_filename("../../etc/passwd")
    'passwd'
    >>> safe_filename("C:\\\\Users\\\\me\\\\Desktop\\\\fire photo (1).JPG")
    'fire_photo_1.jpg'
    >>> safe_filename("con.jpg\\x00.exe")
    '_con.jpg.exe'
    >>> safe_filename(".bashrc")
    'file.bashrc'
    >>> safe_filename("..")
    'file'
    >>> safe_filename("feu de forêt.png")
    'feu_de_foret.png'
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Fold accents to ASCII ("ê" -> "e") and drop what cannot be folded.
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = "".join(char for char in base if char.isprintable())
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = suffix, ""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    stem = re.sub(r"\.{2,}", ".", stem).strip("._- ")[:100]
    suffix = re.sub(r"[^A-Za-z0-9]+", "", suffix).lower()[:10]
    if not stem:
        stem = "file"
    if stem.split(".", 1)[0].upper() in _WINDOWS_DEVICE_NAMES:
        stem = "_" + stem
    return f"{stem}.{suffix}" if suffix else stem


_WINDOWS_DEVICE_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)


def _describe(source: str | Path | bytes | BinaryIO) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<image bytes>"
    return str(getattr(source, "name", None) or "<image stream>")


def _read_bytes(source: str | Path | bytes | BinaryIO, label: str, max_bytes: int) -> bytes:
    # Reading everything up front lets us open the data twice (verify, then load)
    # without depending on the stream being seekable.
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        try:
            with open(source, "rb") as stream:
                data = stream.read(max_bytes + 1)
        except FileNotFoundError as error:
            raise MediaError(f"{label}: file not found") from error
        except IsADirectoryError as error:
            raise MediaError(f"{label}: is a folder, not an image file") from error
        except OSError as error:
            raise MediaError(f"{label}: cannot read file ({plain_reason(error)})") from error
    else:
        try:
            data = source.read(max_bytes + 1)
        except OSError as error:
            raise MediaError(f"{label}: cannot read stream ({plain_reason(error)})") from error
        if isinstance(data, str):
            raise MediaError(f"{label}: opened in text mode; open the file with 'rb'")
        data = bytes(data or b"")
    if len(data) > max_bytes:
        raise MediaError(f"{label}: file larger than {max_bytes} bytes, too big for the pixel limit")
    return data


def _open_header(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """Open lazily (header only), refusing unknown formats and oversized images before any pixel is decoded."""
    # catch_warnings swaps process-wide filters; the lock keeps concurrent calls
    # (verify decodes in threads) from restoring each other's filters.
    with _WARNING_FILTERS_LOCK, warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; treat the warning as the error it is.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=_ALLOWED_FORMATS)
        except UnidentifiedImageError as error:
            raise MediaError(f"{label}: not an image (cannot identify image file)") from error
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise MediaError(f"{label}: too many pixels, refusing to decode ({error})") from error
    try:
        _check_size(image.size, max_pixels, label)
    except MediaError:
        image.close()
        raise
    return image


def _check_size(size: tuple[int, int], max_pixels: int, label: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise MediaError(f"{label}: truncated or corrupt image (size {width}x{height})")
    if width * height > max_pixels:
        raise MediaError(f"{label}: {width}x{height} pixels exceeds the {max_pixels}-pixel limit")


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a damaged EXIF block should not reject pixels that decoded fine.
        return image


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    if image.mode in _HIGH_DEPTH_MODES:
        image = _high_depth_to_grayscale(image)
    if image.mode == "P" or "transparency" in image.info:
        # Palette images may carry a transparent index; RGBA makes the alpha explicit.
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "RGB":
        return image.copy()
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise MediaError(f"{label}: unsupported colour mode {image.mode!r} ({error})") from error


def _high_depth_to_grayscale(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        scaled = pixels / 257.0  # Full 16-bit range onto 0..255.
    else:
        # 32-bit integer and float images have no fixed range: stretch what is there.
        low, high = float(np.nanmin(pixels)), float(np.nanmax(pixels))
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
    return Image.fromarray(np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8), mode="L")
