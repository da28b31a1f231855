"""Synthetic dashcam-like clips whose labels are fully determined by what is drawn.

For tiny training runs and learnability tests: a model that learns anything should get these right.
Every clip is a small grey "road" scene with a white square (the ego vehicle's heading cue) that sets off
from near the centre of the frame:

    intended_action   the square heads left -> turn_left, right -> turn_right, up -> change_lanes
    rule_violations   ["speeding"] when it reaches the edge of the frame, else [] (it covers half the way)
    event_type        collision when the frame flashes red for a few frames, else no_incident
    traffic_density   high with three blue squares (other traffic), low with none
    visibility        good on a bright background, bad on a dark one
    scene             always "Urban"
    caption           a sentence built from the attributes above

Starting from the centre makes where the square is, averaged over the clip, point the way it moves, and a
fading motion-blur streak behind it (four frames of travel long) shows direction and speed in every frame.
Both cues are there because a tiny random-weight model learns them from a frame's content in a few hundred
steps, while comparing positions across frames alone needs attention routing it learns far more slowly.

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
_SLOW = 0.5  # a slow square covers this fraction of the distance a fast one does
_STREAK_FRAMES = 4  # the motion-blur streak is as long as this many frames of travel
_STREAK_COPIES = 8
_JITTER = 2  # pixels of random offset from the centre at the start
_HEADINGS = {"turn_left": (0, -1), "turn_right": (0, 1), "change_lanes": (-1, 0)}  # (rows, columns) per frame


def _blend(frame: np.ndarray, top: int, left: int, side: int, alpha: float) -> None:
    """Blend a white square into `frame` with opacity `alpha`, clipped to the frame."""
    rows = slice(max(top, 0), max(min(top + side, frame.shape[0]), 0))
    cols = slice(max(left, 0), max(min(left + side, frame.shape[1]), 0))
    patch = frame[rows, cols].astype(np.float32)
    frame[rows, cols] = (patch + alpha * (255 - patch)).astype(np.uint8)


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
    # The square sets off near the centre and heads for the side it turns to (up for a lane change), so where
    # it is over the clip, as well as how it moves, tells the action; a slow one covers _SLOW of the way.
    d_top, d_left = _HEADINGS[action]
    centre = (size - _SQUARE) / 2
    reach = centre - 2 - _JITTER  # from the centre to 2 pixels short of the edge
    step = reach / max(num_frames - 1, 1) * (1.0 if fast else _SLOW)
    top0, left0 = centre + rng.uniform(-_JITTER, _JITTER, 2)
    streak = step * _STREAK_FRAMES  # motion blur: fading copies behind the square, this far back
    traffic = [tuple(rng.integers(0, size - _TRAFFIC_SQUARE, 2)) for _ in range(3 if busy else 0)]
    flash_start = int(rng.integers(1, max(2, num_frames - _FLASH_FRAMES)))
    for index in range(num_frames):
        frame = frames[index]
        for top, left in traffic:
            frame[top : top + _TRAFFIC_SQUARE, left : left + _TRAFFIC_SQUARE] = _TRAFFIC_COLOUR
        top, left = top0 + d_top * step * index, left0 + d_left * step * index
        for k in range(_STREAK_COPIES, 0, -1):
            back = streak * k / _STREAK_COPIES
            alpha = 0.8 * (1 - k / (_STREAK_COPIES + 1))
            _blend(frame, int(round(top - d_top * back)), int(round(left - d_left * back)), _SQUARE, alpha)
        top, left = int(round(top)), int(round(left))
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
