"""Fill the frame cache ahead of training: every clip window of the dataset (train and held-out), decoded once.

    python -m video_vlm.prepare --config video_vlm/configs/internvl3_8b_sft.yaml [key=value ...]
    make prepare-video [CONFIG=...] [ARGS="data.num_workers=8"]

Windows are sampled exactly as training, evaluation and the compare gallery sample them (`sample_clip`, with
the config's `data` section, and each curriculum stage's own), so all three then read the cache. Clips are
decoded by `data.num_workers` processes; a clip that cannot be decoded is reported with its metadata line and
left for training to skip, never fatal here. Run it again at any time: cached windows are not decoded twice.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from core.config import ConfigError, load_config
from video_vlm.config import VideoConfig, VideoDataSection

DEFAULT_CONFIG = "video_vlm/configs/internvl3_8b_sft.yaml"


def _fill_one(job: tuple[VideoDataSection, str, float | None, float | None, int]) -> tuple[bool, str | None]:
    """(was it cached already, problem) for one window; runs in a worker process."""
    from core.media.errors import MediaError
    from video_vlm.task import frame_cache, sample_clip, sampling_settings

    data, path, start_s, end_s, line_no = job
    cache = frame_cache(data)
    try:
        if cache.get(path, sampling_settings(data, start_s, end_s)) is not None:
            return True, None
        sample_clip(path, data, start_s, end_s)
    except (MediaError, OSError) as error:
        return False, f"metadata.jsonl line {line_no}: {error}"
    return False, None


def data_sections(cfg: VideoConfig) -> list[VideoDataSection]:
    """The distinct data sections training reads: the base one and each curriculum stage's."""
    sections: list[VideoDataSection] = [cfg.data]
    for stage in cfg.stages:
        data = cfg.stage_sections(stage)[0]
        if data not in sections:
            sections.append(data)
    return sections


def prepare(data: VideoDataSection, progress: bool = True) -> dict:
    """Decode every window of `data`'s dataset into its frame cache.

    Returns:
        windows, already_cached, decoded, failed (list of messages), folder, size_gb, bound_gb.

    Raises:
        ConfigError: `data.frame_cache` is off (there is nothing to fill).
    """
    from video_vlm.task import frame_cache, load_task_schema, verified_items

    if not data.frame_cache:
        raise ConfigError("data.frame_cache is false: there is no cache to fill (set data.frame_cache=true)")
    if not data.synthetic and not Path(data.root).is_dir():
        from video_vlm.data import how_to_get_dataset

        raise ConfigError(f"data.root: dataset folder {data.root} not found. {how_to_get_dataset(data.root)}")
    report = verified_items(data, load_task_schema(data), progress=progress)
    cache = frame_cache(data)
    jobs = [(data, str(item.video_path(report.root)), item.start_s, item.end_s, item.line_no) for item in report.items]
    results = []
    with ProcessPoolExecutor(max_workers=max(1, data.num_workers)) as pool:
        bar = tqdm(pool.map(_fill_one, jobs, chunksize=4), total=len(jobs), desc="caching frames", unit="window", disable=not progress)
        results = list(bar)
    failed = [problem for _, problem in results if problem]
    cached = sum(1 for was_cached, _ in results if was_cached)
    return {
        "windows": len(jobs),
        "already_cached": cached,
        "decoded": len(jobs) - cached - len(failed),
        "failed": failed,
        "folder": str(cache.folder),
        "size_gb": round(cache.size_bytes() / 1024**3, 3),
        "bound_gb": data.frame_cache_gb,
    }


def summary(result: dict) -> str:
    """One line for the terminal.

    >>> summary({"windows": 10, "already_cached": 4, "decoded": 5, "failed": ["x"], "folder": "d/.frame_cache",
    ...          "size_gb": 0.02, "bound_gb": 20.0})
    'frame cache d/.frame_cache: 10 windows, 5 decoded now, 4 already cached, 1 failed; 0.02 GB of 20.0 GB'
    """
    return (
        f"frame cache {result['folder']}: {result['windows']} windows, {result['decoded']} decoded now, "
        f"{result['already_cached']} already cached, {len(result['failed'])} failed; "
        f"{result['size_gb']} GB of {result['bound_gb']} GB"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m video_vlm.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the training config whose frames to cache")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as for training")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(VideoConfig, args.config, args.overrides)
        results = [prepare(data) for data in data_sections(cfg)]
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for result in results:
        print(summary(result), flush=True)
        for problem in result["failed"][:10]:
            print(f"  not cached: {problem}", flush=True)
        if result["size_gb"] >= result["bound_gb"] * 0.9:
            print(
                f"  the cache is at its bound: raise data.frame_cache_gb (now {result['bound_gb']}) to keep every window",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
