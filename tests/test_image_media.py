"""open_image must turn every kind of bad file into a MediaError that names the file, and normalise good ones to RGB."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
from PIL import Image

from core.media.errors import MediaError
from core.media.image import IMAGE_SUFFIXES, open_image, safe_filename


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def gradient(size: tuple[int, int] = (48, 32)) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size)
    image.putdata([(x * 255 // width, y * 255 // height, 128) for y in range(height) for x in range(width)])
    return image


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_valid_images_open_as_rgb(tmp_path: Path, image_format: str) -> None:
    path = tmp_path / f"tile.{image_format.lower()}"
    path.write_bytes(encode(gradient(), image_format))
    image = open_image(path)
    assert image.mode == "RGB"
    assert image.size == (48, 32)


def test_accepts_bytes_and_binary_streams() -> None:
    data = encode(gradient(), "PNG")
    assert open_image(data).size == (48, 32)
    assert open_image(io.BytesIO(data), name="upload.png").size == (48, 32)


def test_zero_byte_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.jpg: empty file"):
        open_image(path)


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not found"):
        open_image(tmp_path / "nowhere.png")


def test_text_file_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("just some text, not a JPEG\n")
    with pytest.raises(MediaError, match=r"notes\.jpg: not an image \(cannot identify image file\)"):
        open_image(path)


def test_rare_formats_are_refused_unread() -> None:
    # Only the formats photos and tiles come in are parsed; EPS would run Ghostscript.
    with pytest.raises(MediaError, match=r"icon\.ico: not an image"):
        open_image(encode(gradient(), "ICO"), name="icon.ico")


def test_warning_filters_are_left_as_they_were() -> None:
    before = list(warnings.filters)
    open_image(encode(gradient(), "PNG"))
    assert warnings.filters == before


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_truncated_image_is_rejected(tmp_path: Path, image_format: str) -> None:
    data = encode(gradient((128, 128)), image_format)
    path = tmp_path / f"cut.{image_format.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.\w+: truncated or corrupt image"):
        open_image(path)


def test_corrupt_png_checksum_is_rejected() -> None:
    data = bytearray(encode(gradient(), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # Flip bits inside the compressed pixels: the CRC no longer matches.
    with pytest.raises(MediaError, match=r"upload\.png: truncated or corrupt image"):
        open_image(bytes(data), name="upload.png")


def test_decompression_bomb_is_rejected_before_decoding() -> None:
    data = encode(Image.new("RGB", (200, 100)), "PNG")
    with pytest.raises(MediaError, match=r"big\.png: 200x100 pixels exceeds the 10000-pixel limit"):
        open_image(data, name="big.png", max_pixels=10_000)


def test_file_too_big_for_the_pixel_limit_is_not_read_whole() -> None:
    oversized = io.BytesIO(b"\x00" * ((16 << 20) + 1000))
    with pytest.raises(MediaError, match=r"huge\.tif: file larger than"):
        open_image(oversized, name="huge.tif", max_pixels=100)


def test_pillow_decompression_bomb_warning_becomes_media_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow's own global limit fires first when it is lower than ours.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(Image.new("RGB", (40, 40)), "PNG")
    with pytest.raises(MediaError, match=r"bomb\.png: too many pixels"):
        open_image(data, name="bomb.png")


def test_palette_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 1)
    data = encode(image, "PNG", transparency=0)  # Index 0 (red) is transparent.
    result = open_image(data)
    assert result.mode == "RGB"
    assert result.getpixel((1, 1)) == (255, 255, 255)
    assert result.getpixel((0, 0)) == (0, 0, 255)


def test_rgba_is_composited_on_white() -> None:
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (10, 200, 30, 255))
    result = open_image(encode(image, "PNG"))
    assert result.mode == "RGB"
    assert result.getpixel((0, 0)) == (255, 255, 255)
    assert result.getpixel((1, 0)) == (10, 200, 30)


def test_grayscale_and_16_bit_become_rgb() -> None:
    assert open_image(encode(Image.new("L", (3, 3), 77), "PNG")).getpixel((0, 0)) == (77, 77, 77)
    deep = Image.new("I;16", (3, 3), 65535)
    assert open_image(encode(deep, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    image = gradient((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "Rotate 90 CW to display": width and height swap.
    result = open_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert result.size == (20, 40)


def test_animated_image_gives_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = open_image(buffer.getvalue())
    red, green, blue = result.getpixel((4, 4))
    assert red > 200 and blue < 50


def test_result_is_detached_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tile.png"
    path.write_bytes(encode(gradient(), "PNG"))
    image = open_image(path)
    path.unlink()
    assert image.getpixel((0, 0)) == (0, 0, 128)


def test_image_suffixes_are_lowercase_with_dots() -> None:
    assert all(suffix.startswith(".") and suffix == suffix.lower() for suffix in IMAGE_SUFFIXES)
    assert {".jpg", ".png", ".webp"} <= set(IMAGE_SUFFIXES)


@pytest.mark.parametrize(
    "hostile",
    ["../../etc/passwd", "..\\..\\boot.ini", "/abs/path/x.png", "con.jpg\x00.exe", "\x1b[31mred.png", "...", "", "a" * 500 + ".png"],
)
def test_safe_filename_never_escapes_or_is_empty(hostile: str) -> None:
    name = safe_filename(hostile)
    assert name
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert all(char.isascii() and char.isprintable() for char in name)
    assert len(name) <= 120


def test_safe_filename_keeps_the_suffix() -> None:
    assert safe_filename("My Fire Photo.JPEG") == "My_Fire_Photo.jpeg"
    assert safe_filename("../uploads/tile 01.png").endswith(".png")
