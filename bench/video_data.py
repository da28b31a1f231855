"""The video data path at full size: decode, resize, processor, collate, in samples/s, as training loads it.

    python bench/video_data.py          # 40 s 1280x720 30 fps H.264 clip, 12 windows, 12 frames at 448 px; CPU
    python bench/video_data.py --tiny   # 6 s 320x180 clip, 4 windows, a few seconds

Every sample goes through the product's `VideoSFTCollator` (`video_vlm.task.sample_clip` -> `read_frames`, then
the InternVL3 processor at 448 px, 256 tokens per frame, the prompt and the masked answer) inside a torch
DataLoader, exactly as `video_vlm/train.py` hands it to the Trainer (batch size 1, `data.prefetch_factor`).
The clip is `bench/frames.py`'s panning texture with a keyframe every second, cut into windows of equal length,
so every sample decodes real 720p frames. Cases, each timed over one pass of every window:

* cold, 1 worker and cold, N workers: the frame cache off, every window decoded;
* cold cache: the cache on and empty (decode, then write the entry), 1 worker;
* warm cache: the same windows again, read from the cache, 1 worker, and then with N workers.

An untimed pass over every window runs first, so the clip is in the page cache for every case.

The frame-source columns split each case's per-sample time between getting the frames (decode or cache read,
timed in the worker) and the rest (processor, tokenising, collate). N defaults to this machine's CPU count.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

NAME = "video_data"

COLUMNS = (
    ("case", "case"),
    ("workers", "workers"),
    ("status", "status"),
    ("samples", "samples"),
    ("samples_per_s", "samples/s"),
    ("frames_s_per_sample", "frames s/sample"),
    ("rest_s_per_sample", "rest s/sample"),
    ("vs_cold_1_worker", "x cold 1 worker"),
)


def parse_args(argv=None):
    parser = common.base_parser(NAME, __doc__)
    parser.add_argument("--workers", type=int, default=None, help="N for the N-worker case (default: the CPU count)")
    parser.add_argument("--windows", type=int, default=None, help="clip windows (samples) per case (default: 12, tiny 4)")
    parser.add_argument("--frames", type=int, default=12, help="frames per window (the shipped data.num_frames)")
    parser.add_argument("--max-side", type=int, default=448, help="frame size (the shipped data.frame_max_side)")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "vlm-bench-frames", help="where the clip is kept")
    args = parser.parse_args(argv)
    from core.processes import usable_cpus

    args.workers = args.workers or max(2, usable_cpus())
    args.windows = args.windows or (4 if args.tiny else 12)
    if args.tiny:
        args.seconds, args.width, args.height, args.fps = 6.0, 320, 180, 30
    else:
        args.seconds, args.width, args.height, args.fps = 40.0, 1280, 720, 30
    return args


def make_dataset(args, work: Path) -> Path:
    """A dataset folder: the panning clip and one metadata line per window, labelled with a synthetic label."""
    import frames as frames_bench
    from video_vlm.synthetic import synthetic_label

    clip_args = type("ClipArgs", (), {})()
    for key in ("cache_dir", "width", "height", "fps", "seconds", "seed"):
        setattr(clip_args, key, getattr(args, key))
    clip = frames_bench.cached_clip(clip_args, gop=30)
    root = work / "dataset"
    (root / "videos").mkdir(parents=True)
    shutil.copy2(clip, root / "videos" / "pan.mp4")
    span = args.seconds / args.windows
    label = synthetic_label("turn_left", True, True, True, True)
    lines = [
        json.dumps({"video": "videos/pan.mp4", "start": round(i * span, 3), "end": round((i + 1) * span, 3), **label})
        for i in range(args.windows)
    ]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


class TimedFrames:
    """Wraps the collator's frame source (`video_vlm.collator.sample_clip`) and returns the seconds it took with
    each batch, so the time spent getting frames is measured inside whichever process collates."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, rows):
        import video_vlm.collator as collator_module

        spent = [0.0]
        original = collator_module.sample_clip

        def timed_sample_clip(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        collator_module.sample_clip = timed_sample_clip
        try:
            batch = self.collator(rows)
        finally:
            collator_module.sample_clip = original
        batch["frames_s"] = spent[0]
        return batch


def run_case(name: str, workers: int, cache_on: bool, cfg, processor, dataset, cache_dir: Path) -> dict[str, Any]:
    """Load every window once through a DataLoader as the Trainer builds it; time from the first batch on."""
    from torch.utils.data import DataLoader

    from video_vlm.collator import VideoSFTCollator
    from video_vlm.task import load_task_schema

    data = cfg.data.model_copy(update={"num_workers": workers, "frame_cache": cache_on, "frame_cache_dir": str(cache_dir)})
    collator = VideoSFTCollator(processor, data, load_task_schema(data), cfg.train.max_length, seed=0)
    loader = DataLoader(
        dataset, batch_size=1, shuffle=False, collate_fn=TimedFrames(collator), num_workers=workers,
        prefetch_factor=data.prefetch_factor if workers else None,
    )
    start = time.perf_counter()  # worker start-up included: forked workers start in milliseconds
    frame_seconds = [float(batch["frames_s"]) for batch in loader]
    elapsed = time.perf_counter() - start
    samples = len(frame_seconds)
    per_sample = elapsed / samples
    frames_s = statistics.mean(frame_seconds)
    return {
        "case": name,
        "workers": workers,
        "frame_cache": cache_on,
        "status": "ok",
        "samples": samples,
        "elapsed_s": elapsed,
        "samples_per_s": samples / elapsed,
        "frames_s_per_sample": frames_s,
        # with N workers the per-sample wall time is shared, so only the 1-worker split adds up exactly
        "rest_s_per_sample": max(per_sample * max(workers, 1) - frames_s, 0.0),
    }


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    common.quiet_libraries()
    threads = common.set_threads(args.tiny, args.threads)
    print(common.describe_env(), flush=True)
    from core.config import load_config
    from core.processes import usable_cpus
    from video_sft_step import full_size_processor
    from video_vlm.config import VideoConfig

    work = Path(tempfile.mkdtemp(prefix="bench-video-data-"))
    try:
        root = make_dataset(args, work)
        cfg = load_config(
            VideoConfig,
            common.REPO_ROOT / "video_vlm/configs/internvl3_8b_sft.yaml",
            [f"data.root={root}", f"data.num_frames={args.frames}", f"data.frame_max_side={args.max_side}"],
        )
        from video_vlm.task import load_task_schema, training_dataset, verified_items

        report = verified_items(cfg.data, load_task_schema(cfg.data))
        dataset = list(training_dataset(report.items, root))
        processor = full_size_processor(work)
        cache = work / "frame-cache"
        cases = (
            ("cold, 1 worker", 1, False),
            (f"cold, {args.workers} workers", args.workers, False),
            ("cold cache", 1, True),
            ("warm cache", 1, True),
            (f"warm cache, {args.workers} workers", args.workers, True),
        )
        # One untimed pass first: the clip in the page cache and the libraries warm, so that the first case
        # is not the only one to pay for them.
        run_case("warm-up", 1, False, cfg, processor, dataset, cache)
        rows = []
        for name, workers, cache_on in cases:
            print(f"{name}: {len(dataset)} windows", flush=True)
            rows.append(run_case(name, workers, cache_on, cfg, processor, dataset, cache))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by_case = {row["case"]: row for row in rows}
    cold = by_case["cold, 1 worker"]
    for row in rows:
        row["vs_cold_1_worker"] = common.ratio(row["samples_per_s"], cold["samples_per_s"])
    warm, cold_cache = by_case["warm cache"], by_case["cold cache"]
    parallel = by_case[f"cold, {args.workers} workers"]
    figures = {
        "rows": rows,
        "ratio": {
            "name": "warm-cache samples/s over cold-decode samples/s (1 worker)",
            "baseline": cold["case"],
            "value": common.ratio(warm["samples_per_s"], cold["samples_per_s"]),
        },
        "targets": {
            "warm_cache_vs_cold": {"target": ">= 10", "value": common.ratio(warm["samples_per_s"], cold["samples_per_s"])},
            "warm_cache_frames_vs_cold_decode": {
                "target": "(frames only)",
                "value": common.ratio(cold["frames_s_per_sample"], warm["frames_s_per_sample"]),
            },
            "n_workers_vs_1": {"target": ">= 1.7", "value": common.ratio(parallel["samples_per_s"], cold["samples_per_s"])},
            "cold_cache_overhead": {"target": "(writing entries)", "value": common.ratio(cold["samples_per_s"], cold_cache["samples_per_s"])},
            "warm_cache_n_workers_vs_cold": {
                "target": "(both levers)",
                "value": common.ratio(by_case[f"warm cache, {args.workers} workers"]["samples_per_s"], cold["samples_per_s"]),
            },
        },
    }
    config = {
        "clip": f"{args.seconds:g} s {args.width}x{args.height} {args.fps} fps H.264, keyframe every 30 frames",
        "windows": args.windows,
        "window_s": args.seconds / args.windows,
        "frames": args.frames,
        "max_side": args.max_side,
        "processor": "InternVL3 processor at 448 px (256 tokens per frame)",
        "torch_threads_main": threads,
        "n_workers": args.workers,
        "cpus": usable_cpus(),
    }
    notes = [
        "each case loads every window once through torch's DataLoader with the product's VideoSFTCollator",
        "frames s/sample: decode (or cache read) inside the collating process; rest: processor, tokenising, collate",
        "DataLoader workers run torch with one thread each (torch sets it); N workers share this machine's cores",
    ]
    payload = common.result_payload(NAME, tiny=args.tiny, config=config, figures=figures, notes=notes, started=started)
    table = common.format_table(rows, COLUMNS)
    targets = figures["targets"]
    table += (
        f"\nwarm cache / cold decode: {targets['warm_cache_vs_cold']['value']:.2f}x samples/s "
        f"({targets['warm_cache_frames_vs_cold_decode']['value']:.1f}x on the frames alone); "
        f"{args.workers} workers / 1: {targets['n_workers_vs_1']['value']:.2f}x"
    )
    return common.finish(args.out, payload, table)


if __name__ == "__main__":
    sys.exit(main())
