"""A small synthetic stand-in for the Kaggle wildfire dataset.

Tiles are noisy green/brown "terrain"; `wildfire` tiles also hold a red-orange
blob. Telling the classes apart is trivial for a vision model, which makes
this a fast learnability check for the whole pipeline (data, rewards,
training, evaluation) without downloading anything. The folder layout
matches the real dataset: `{train,valid,test}/{wildfire,nowildfire}/*.png`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["SYNTHETIC_CLASSES", "SYNTHETIC_SPLITS", "make_synthetic_dataset", "terrain_tile"]

SYNTHETIC_SPLITS = ("train", "valid", "test")
SYNTHETIC_CLASSES = ("wildfire", "nowildfire")

_GREEN = np.array([46.0, 110.0, 40.0])
_BROWN = np.array([125.0, 95.0, 60.0])


def terrain_tile(rng: np.random.Generator, size: int = 64, fire: bool = False) -> Image.Image:
    """Draw one tile: blotchy green/brown terrain, plus a red-orange fire blob when `fire`.

    Args:
        rng: Source of randomness, so a seed reproduces the same tile.
        size: Width and height in pixels.
        fire: Whether to paint the fire blob.
    """
    # Smooth blotches: a coarse random grid scaled up with bilinear interpolation.
    coarse = Image.fromarray((rng.random((6, 6)) * 255).astype(np.uint8), mode="L")
    blend = np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)[..., None] / 255
    pixels = _GREEN * (1 - blend) + _BROWN * blend
    pixels = pixels + rng.normal(0.0, 12.0, size=(size, size, 3))

    if fire:
        radius = rng.uniform(size / 9, size / 5)
        centre_x, centre_y = rng.uniform(radius, size - radius, size=2)
        ys, xs = np.mgrid[0:size, 0:size]
        # An irregular outline: stretch the circle a little along each axis.
        stretch_x, stretch_y = rng.uniform(0.7, 1.3, size=2)
        distance = np.sqrt(((xs - centre_x) / stretch_x) ** 2 + ((ys - centre_y) / stretch_y) ** 2)
        strength = np.clip(1.3 - distance / radius, 0.0, 1.0)[..., None]  # Solid core, soft edge.
        flame = np.array([rng.uniform(225, 255), rng.uniform(40, 130), rng.uniform(0, 30)])
        pixels = pixels * (1 - strength) + flame * strength

    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def make_synthetic_dataset(
    out: str | Path,
    per_class: int = 40,
    size: int = 64,
    seed: int = 0,
    *,
    image_format: str = "png",
    corrupt: int = 0,
) -> Path:
    """Write the synthetic dataset under `out` and return that folder.

    Args:
        out: Destination; created if needed. Existing files with the same names are overwritten.
        per_class: Images per class in every split.
        size: Tile width and height in pixels.
        seed: Same seed, same pixels.
        image_format: "png" (lossless) or "jpg".
        corrupt: Extra broken files to add to `train/wildfire`, to exercise the
            corrupt-file handling of `verify`.

    Returns:
        The dataset root.
    """
    if per_class < 1 or size < 8:
        raise ValueError(f"per_class must be >= 1 and size >= 8 (got per_class={per_class}, size={size})")
    suffix = {"png": "png", "jpg": "jpg", "jpeg": "jpg"}.get(image_format.lower())
    if suffix is None:
        raise ValueError(f"image_format must be 'png' or 'jpg', not {image_format!r}")

    save_options = {"quality": 95} if suffix == "jpg" else {}
    root = Path(out)
    rng = np.random.default_rng(seed)
    for split in SYNTHETIC_SPLITS:
        for label in SYNTHETIC_CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                tile = terrain_tile(rng, size=size, fire=label == "wildfire")
                tile.save(folder / f"{label}_{index:04d}.{suffix}", **save_options)
    for index in range(corrupt):
        # Half a PNG signature and header: recognisably an image file name, undecodable content.
        (root / "train" / "wildfire" / f"corrupt_{index:02d}.{suffix}").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 7)
    return root
