"""The frame cache: a window is decoded once; an edited clip, other settings or a damaged entry never serve stale
frames; the folder stays under its bound; `prepare` fills it ahead of training."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from core.media.frame_cache import FrameCache
from core.media.video import write_clip
from video_vlm.config import VideoDataSection


@pytest.fixture()
def clip(tmp_path) -> Path:
    frames = np.stack([np.full((32, 48, 3), 10 * index, np.uint8) for index in range(16)])
    return write_clip(tmp_path / "clip.mp4", frames, fps=8)


def count_decodes(monkeypatch) -> list[tuple]:
    """Calls that reach the decoder."""
    import core.media.video as video

    calls: list[tuple] = []
    real = video.read_frames

    def read_frames(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(video, "read_frames", read_frames)
    return calls


def test_a_window_is_decoded_once_then_read_from_the_cache(clip, tmp_path, monkeypatch):
    from video_vlm.task import frame_cache, sample_clip

    data = VideoDataSection(root=str(tmp_path), num_frames=4, frame_max_side=32)
    decodes = count_decodes(monkeypatch)
    first = sample_clip(clip, data, 0.0, 1.5)
    second = sample_clip(clip, data, 0.0, 1.5)
    assert len(decodes) == 1 and np.array_equal(first.frames, second.frames)
    # the presentation times of the frames shown at the centres of 4 segments of 1.5 s (an 8 fps clip), kept in the cache
    assert first.timestamps_s == second.timestamps_s == [0.125, 0.5, 0.875, 1.25]
    assert frame_cache(data).hits >= 1 and any((tmp_path / ".frame_cache").rglob("*.npz"))
    # another window, frame count or size is another entry
    sample_clip(clip, data, 0.5, 1.5)
    sample_clip(clip, data.model_copy(update={"num_frames": 3}), 0.0, 1.5)
    sample_clip(clip, data.model_copy(update={"frame_max_side": 28}), 0.0, 1.5)
    assert len(decodes) == 4
    # and the cache off decodes every time
    off = data.model_copy(update={"frame_cache": False})
    sample_clip(clip, off, 0.0, 1.5)
    sample_clip(clip, off, 0.0, 1.5)
    assert len(decodes) == 6


def test_an_edited_clip_is_decoded_again(clip, tmp_path, monkeypatch):
    from video_vlm.task import sample_clip

    data = VideoDataSection(root=str(tmp_path), num_frames=2, frame_max_side=32)
    before = sample_clip(clip, data)
    frames = np.stack([np.full((32, 48, 3), 250, np.uint8)] * 16)
    write_clip(clip, frames, fps=8)  # same path, new content
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # even on a coarse-clock filesystem
    decodes = count_decodes(monkeypatch)
    after = sample_clip(clip, data)
    assert len(decodes) == 1 and after.frames.mean() > before.frames.mean() + 50


def test_a_damaged_entry_is_dropped_and_decoded_again(clip, tmp_path):
    cache = FrameCache(tmp_path / "cache", max_bytes=10**9)
    settings = {"num_frames": 2}
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    entry = cache.put(clip, settings, frames, [0.5, 1.5])
    entry.write_bytes(entry.read_bytes()[:20])  # cut short, as by a full disk or a killed writer
    assert cache.get(clip, settings) is None and not entry.exists()
    cache.put(clip, settings, frames, [0.5, 1.5])
    stored, times = cache.get(clip, settings)
    assert np.array_equal(stored, frames) and times == [0.5, 1.5]


def test_the_folder_stays_under_its_bound_and_the_least_recently_used_go_first(clip, tmp_path):
    entry_bytes = FrameCache(tmp_path / "probe", 10**9).put(clip, {"i": -1}, np.zeros((1, 100, 100, 3), np.uint8), [0.5]).stat().st_size
    cache = FrameCache(tmp_path / "cache", max_bytes=int(entry_bytes * 4.5))
    frames = np.zeros((1, 100, 100, 3), np.uint8)
    for index in range(4):
        cache.put(clip, {"i": index}, frames, [0.5])
        time.sleep(0.01)
    assert cache.get(clip, {"i": 0}) is not None  # a use: entry 0 is now the most recent
    time.sleep(0.01)
    for index in range(4, 7):
        cache.put(clip, {"i": index}, frames, [0.5])
        time.sleep(0.01)
    assert cache.size_bytes() <= cache.max_bytes
    kept = {index for index in range(7) if cache.get(clip, {"i": index}) is not None}
    assert kept == {0, 4, 5, 6}  # 1, 2, 3 were older than the touched entry 0


def test_an_unwritable_cache_is_reported_once_and_frames_still_come(clip, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    cache = FrameCache(blocker / "cache", max_bytes=10**9)
    frames = np.zeros((1, 4, 4, 3), np.uint8)
    assert cache.put(clip, {}, frames, [0.5]) is None and cache.put(clip, {"n": 1}, frames, [0.5]) is None
    assert capsys.readouterr().err.count("is not writable") == 1


def test_prepare_fills_the_cache_that_training_then_reads(tmp_path, monkeypatch, capsys):
    from video_vlm import prepare
    from video_vlm.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "data", n=6, seed=0)
    overrides = [f"data.root={root}", "data.num_workers=2"]
    assert prepare.main(["--config", "video_vlm/configs/tiny.yaml", *overrides]) == 0
    first = capsys.readouterr()
    assert "6 windows, 6 decoded now, 0 already cached, 0 failed" in first.out
    assert "caching frames" in first.err  # the progress bar
    assert prepare.main(["--config", "video_vlm/configs/tiny.yaml", *overrides]) == 0
    assert "6 windows, 0 decoded now, 6 already cached" in capsys.readouterr().out
    # training's sampler now never reaches the decoder
    from core.config import load_config
    from video_vlm.config import VideoConfig
    from video_vlm.task import clip_frames, load_task_schema, verified_items

    data = load_config(VideoConfig, "video_vlm/configs/tiny.yaml", overrides).data
    decodes = count_decodes(monkeypatch)
    report = verified_items(data, load_task_schema(data))
    for item in report.items:
        assert clip_frames(item, root, data).frames.shape[0] == data.num_frames
    assert decodes == []


def test_prepare_with_the_cache_off_says_what_to_set(tmp_path, capsys):
    from video_vlm import prepare

    code = prepare.main(["--config", "video_vlm/configs/tiny.yaml", f"data.root={tmp_path}", "data.frame_cache=false"])
    assert code == 2 and "set data.frame_cache=true" in capsys.readouterr().err


def test_prepare_without_the_dataset_says_how_to_get_it(tmp_path, capsys):
    from video_vlm import prepare

    missing = tmp_path / "nowhere"
    assert prepare.main(["--config", "video_vlm/configs/internvl3_8b_sft.yaml", f"data.root={missing}"]) == 2
    assert f"dataset folder {missing} not found" in capsys.readouterr().err
    assert not missing.exists()  # nothing created on the way
