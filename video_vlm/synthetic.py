"""Synthetic dashcam-like clips whose labels are fully determined by what is drawn.

For tiny training runs and learnability tests: a model that learns anything should get these right.
Every clip is a small grey "road" scene with a white square (the ego vehicle's heading cue):

    intended_action   the square moves left -> turn_left, right -> turn_right, up -> change_lanes
    rule_violations   ["speeding"] when the square crosses the frame, else [] (it creeps a quarter of the way)
    event_type        collision when the frame flashes red for a few frames, else no_incident
    traffic_density   high with three blue squares (other traffic), low with none
    visibility        good on a bright background, bad on a dark one
    scene             always "Urban"
    caption           a sentence built from the attributes above

The red flash lasts 4 frames, so any uniform sampling of at least 4 frames of a 12-frame clip sees it.
The objects are large for a 64-pixel frame on purpose: the tiny test model sees each frame as 2x2 tokens of
28x28 pixels, and the learnability test needs direction and speed to be visible at that grain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.media.video import write_clip

ACTIONS = ("turn_left", "turn_right", "change_lanes")
_DIRECTION_WORDS = {"turn_left": "left", "turn_right": "right", "change_lanes": "up"}
_FLASH_FRAMES = 4
_SQUARE = 16  # side of the white square, pixels
_TRAFFIC_SQUARE = 12
_TRAFFIC_COLOUR = (40, 70, 210)
_SLOW = 0.25  # a slow square covers this fraction of the distance a fast one does


def synthetic_label(action: str, fast: bool, collision: bool, busy: bool, bright: bool) -> dict:
    """The label of a synthetic clip with these attributes (dashcam schema, every field known)."""
    speed = "quickly" if fast else "slowly"
    traffic = "past three blue squares" if busy else "on an empty road"
    light = "bright" if bright else "dark"
    flash = ", and the screen flashes red" if collision else ""
    return {
        "caption": f"A white square moves {_DIRECTION_WORDS[action]} {speed} {traffic} in a {light} scene{flash}.",
        "event_type": "collision" if collision else "no_incident",
        "rule_violations": ["speeding"] if fast else [],
        "intended_action": action,
        "traffic_density": "high" if busy else "low",
        "visibility": "good" if bright else "bad",
        "scene": "Urban",
    }


def render_clip(
    action: str,
    fast: bool,
    collision: bool,
    busy: bool,
    bright: bool,
    rng: np.random.Generator,
    num_frames: int = 12,
    size: int = 64,
) -> np.ndarray:
    """Draw one clip as uint8 RGB frames [num_frames, size, size, 3]."""
    background = 150 if bright else 45
    frames = np.full((num_frames, size, size, 3), background, dtype=np.uint8)
    frames[:, size * 2 // 3 :, :, :] = background // 2  # darker road surface at the bottom
    # Keep the full path on screen: the square travels `step` pixels per frame from one side.
    travel = size - _SQUARE - 4
    step = travel / max(num_frames - 1, 1) * (1.0 if fast else _SLOW)
    start = 2 + int(rng.integers(0, max(1, travel - int(step * (num_frames - 1)))))
    fixed = int(rng.integers(2, size - _SQUARE - 2))
    traffic = [tuple(rng.integers(0, size - _TRAFFIC_SQUARE, 2)) for _ in range(3 if busy else 0)]
    flash_start = int(rng.integers(1, max(2, num_frames - _FLASH_FRAMES)))
    for index in range(num_frames):
        frame = frames[index]
        for top, left in traffic:
            frame[top : top + _TRAFFIC_SQUARE, left : left + _TRAFFIC_SQUARE] = _TRAFFIC_COLOUR
        offset = int(round(step * index))
        if action == "turn_left":
            top, left = fixed, size - _SQUARE - start - offset
        elif action == "turn_right":
            top, left = fixed, start + offset
        else:
            top, left = size - _SQUARE - start - offset, fixed
        frame[top : top + _SQUARE, left : left + _SQUARE] = 255
        if collision and flash_start <= index < flash_start + _FLASH_FRAMES:
            frame[:] = (0.3 * frame + 0.7 * np.array([255, 0, 0])).astype(np.uint8)
    return frames


def make_synthetic_dataset(
    out: str | Path, n: int = 40, seed: int = 0, num_frames: int = 12, size: int = 64, fps: float = 8.0
) -> Path:
    """Write `n` synthetic clips and their labels in the dataset folder format.

    Actions cycle through left/right/up and the collision flag alternates every three clips, so the two
    main fields are balanced; the other attributes are drawn from `seed`.

    Args:
        out: Dataset folder; gets `videos/synth_XXXX.mp4` and `metadata.jsonl` (overwritten).
        n: Number of clips.
        seed: Seed for the random attributes and positions.
        num_frames: Frames per clip.
        size: Frame side in pixels (even, for H.264).
        fps: Frame rate.

    Returns:
        The dataset folder.
    """
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(n):
        action = ACTIONS[index % len(ACTIONS)]
        collision = (index // len(ACTIONS)) % 2 == 1
        fast, busy, bright = (bool(flag) for flag in rng.integers(0, 2, 3))
        frames = render_clip(action, fast, collision, busy, bright, rng, num_frames, size)
        name = f"videos/synth_{index:04d}.mp4"
        write_clip(out / name, frames, fps, codec="libx264")
        lines.append(json.dumps({"video": name, **synthetic_label(action, fast, collision, busy, bright)}))
    (out / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
