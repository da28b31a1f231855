"""The dashcam task as training, evaluation, inference and the UI all see it: the prompt, the clips, the frames.

Frames come from ONE function, `sample_clip`: the same number of frames, sampled the same way (uniformly
over the window, `core.media.video.read_frames`), at the same size, in training and at inference. The
reference notebook drew 8-32 random frames per training clip and 12 at inference; a model trained on one
frame rate and asked about another sees a different task.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from core.files import generate_synthetic_once
from video_vlm.config import VideoDataSection
from video_vlm.schema import SchemaSpec, load_schema


def load_task_schema(data: VideoDataSection) -> SchemaSpec:
    """The output schema of the task: `data.schema_file`, or the dashcam schema when it is empty."""
    return load_schema(data.schema_file)


class SampledClip(NamedTuple):
    """A clip window as the model sees it: frames [N, H, W, 3] uint8 and the time of each (seconds from the
    clip's start), which families with time tokens (Qwen3-VL, SmolVLM2) are told instead of a guessed rate."""

    frames: np.ndarray
    timestamps_s: list[float]


def prompt_messages(data: VideoDataSection, schema: SchemaSpec, video: SampledClip | None = None) -> list[dict[str, Any]]:
    """System + user turn. With `video` the user turn carries the clip (frames and their times) before the
    instruction.

    >>> from video_vlm.config import VideoDataSection
    >>> clip = SampledClip(np.zeros((2, 8, 8, 3), np.uint8), [0.5, 1.5])
    >>> messages = prompt_messages(VideoDataSection(), load_schema(None), video=clip)
    >>> [m["role"] for m in messages], [part["type"] for part in messages[1]["content"]]
    (['system', 'user'], ['video', 'text'])
    """
    user: list[dict[str, Any]] = [{"type": "text", "text": schema.prompt()}]
    if video is not None:
        user.insert(0, {"type": "video", "video": video.frames, "timestamps_s": list(video.timestamps_s)})
    # Lists of typed parts, never a plain string: some templates (SmolVLM2's) drop a plain-string turn.
    return [{"role": "system", "content": [{"type": "text", "text": data.system_prompt}]}, {"role": "user", "content": user}]


def frame_cache(data: VideoDataSection):
    """The frame cache `data` asks for (`core.media.frame_cache`), or None when `data.frame_cache` is off
    (or the cache would live in a dataset folder that does not exist).

    One instance per folder and process, so that its hit counts and size bookkeeping last across calls.
    """
    if not data.frame_cache:
        return None
    from core.media.frame_cache import FrameCache

    if data.frame_cache_dir:
        folder = Path(data.frame_cache_dir)
    elif Path(data.root).is_dir():
        folder = Path(data.root) / ".frame_cache"
    else:  # no dataset here (an upload in the compare view): never create data.root just to cache into it
        return None
    max_bytes = int(data.frame_cache_gb * 1024**3)
    key = (str(folder.resolve()), max_bytes)
    if key not in _FRAME_CACHES:
        _FRAME_CACHES[key] = FrameCache(folder, max_bytes)
    return _FRAME_CACHES[key]


_FRAME_CACHES: dict[tuple[str, int], Any] = {}


def sampling_settings(data: VideoDataSection, start_s: float | None, end_s: float | None) -> dict[str, Any]:
    """Everything besides the file that decides which pixels `sample_clip` returns: the frame cache's key."""
    return {"num_frames": data.num_frames, "start_s": start_s, "end_s": end_s, "max_side": data.frame_max_side}


def sample_clip(path: str | Path, data: VideoDataSection, start_s: float | None = None, end_s: float | None = None) -> SampledClip:
    """`num_frames` frames [N, H, W, 3] uint8 of one clip window, and their times: the only frame sampler of the
    recipe.

    With `data.frame_cache` on, a window decoded before (same file, same settings) is read from the cache.

    Raises:
        VideoError: The clip cannot be read or the window is outside it (a `MediaError`).
    """
    from core.media.video import read_frames

    cache = frame_cache(data)
    settings = sampling_settings(data, start_s, end_s)
    if cache is not None:
        try:
            cached = cache.get(path, settings)
        except OSError:  # the clip is missing or unreadable: read_frames says which, in its own words
            cached = None
        if cached is not None:
            return SampledClip(*cached)
    frames = read_frames(path, data.num_frames, start_s, end_s, max_side=data.frame_max_side)
    if cache is not None:
        cache.put(path, settings, frames.array, frames.timestamps_s)
    return SampledClip(frames.array, frames.timestamps_s)


def clip_frames(item, root: str | Path, data: VideoDataSection) -> SampledClip:
    """Frames of a dataset item (`video_vlm.data.Item`) in dataset folder `root`."""
    return sample_clip(item.video_path(root), data, item.start_s, item.end_s)


def ensure_dataset(data: VideoDataSection) -> Path:
    """The dataset root, generating the synthetic moving-square clips first when the config asks and it is missing.

    Generated only into a missing or empty folder: a folder that holds anything else without its metadata.jsonl
    (a real dataset missing it) is refused with a ConfigError naming the folder and what it holds.
    """
    from video_vlm.data import METADATA_FILE

    root = Path(data.root)
    metadata = root / METADATA_FILE
    if not data.synthetic or metadata.is_file():
        return root
    from video_vlm.synthetic import make_synthetic_dataset

    generate_synthetic_once(root, metadata, "moving-square clips", lambda: make_synthetic_dataset(root, n=48, seed=data.seed))
    return root


def verified_items(data: VideoDataSection, schema: SchemaSpec, progress: bool = False, write_manifest: bool = True):
    """Check every line of the dataset (`video_vlm.data.verify_dataset`) and return its report.

    Training and evaluation both call this, so they agree on the split; bad lines are counted, never fatal.
    Under several processes only one should write the manifest (`write_manifest`).

    Raises:
        ValueError: No valid item at all (the message lists the problem counts).
    """
    from video_vlm.data import verify_dataset

    root = ensure_dataset(data)
    report = verify_dataset(root, data.val_fraction, data.num_frames, schema, write_manifest=write_manifest, progress=progress)
    if not report.ok:
        raise ValueError(f"{root}: no valid clip. {report.summary()}\n(check with: python -m video_vlm.data verify --root {root})")
    return report


def split_items(report, split: str, limit: int | None = None, seed: int = 0) -> list:
    """Items of one split, at most `limit` of them (a seeded sample, in manifest order)."""
    import random

    items = [item for item in report.items if item.split == split]
    if limit is not None and len(items) > limit:
        keep = set(random.Random(seed).sample(range(len(items)), limit))
        items = [item for index, item in enumerate(items) if index in keep]
    return items


def item_row(item, root: str | Path) -> dict[str, Any]:
    """A dataset row for the trainer: the item's fields, the label as JSON text (mixed types stay Arrow-safe)."""
    row = asdict(item)
    row["label"] = json.dumps(item.label, ensure_ascii=False)
    row["root"] = str(root)
    return row


def row_item(row: dict[str, Any]):
    """The `Item` back from `item_row`'s dict."""
    from video_vlm.data import Item

    fields = {key: row[key] for key in ("video", "start_s", "end_s", "split", "line_no", "duration_s")}
    return Item(label=json.loads(row["label"]), **fields)


def training_dataset(items: list, root: str | Path):
    """A `datasets.Dataset` of clip references; frames are decoded in the collator, batch by batch."""
    from datasets import Dataset

    return Dataset.from_list([item_row(item, root) for item in items])
