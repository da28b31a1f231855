"""Clip in, validated JSON out: one window, or a rolling analysis of a whole video.

    python -m video_vlm.inference --run runs/video-... --video clip.mp4 [--start S --end E] [--base]
    python -m video_vlm.inference --run runs/video-... --video drive.mp4 --rolling [--window 4 --stride 2]

Frames are sampled exactly as in training (`video_vlm.task.sample_clip`: `data.num_frames` frames of
`data.frame_max_side` px), and the answer is validated against the run's schema. An answer that breaks the
schema comes back as its raw text plus the validation error, never as a half-trusted object.

Rolling mode is the playbook's "real-time" analysis: consecutive windows of `window_s` seconds every
`stride_s` seconds, each analysed on its own, as a stream of dashcam footage would be.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from video_vlm.config import VideoConfig
from video_vlm.task import load_task_schema, prompt_messages, sample_clip


@dataclass
class ClipResult:
    """One analysed window.

    Attributes:
        text: The model's raw answer.
        valid: The answer is one JSON object that passes the schema.
        value: The validated object (canonical key order), None unless valid.
        error: Why the answer is not valid, None when it is.
        start_s: Window start in seconds (None: the clip start).
        end_s: Window end in seconds (None: the clip end).
    """

    text: str
    valid: bool
    value: dict | None
    error: str | None
    start_s: float | None = None
    end_s: float | None = None


def _results(cfg: VideoConfig, texts: list[str], windows: list[tuple]) -> list[ClipResult]:
    schema = load_task_schema(cfg.data)
    results = []
    for text, (start_s, end_s) in zip(texts, windows):
        parsed = schema.parse_output(text)
        results.append(ClipResult(text, parsed.valid, parsed.value, parsed.error, start_s, end_s))
    return results


def analyze_windows(
    model, processor, cfg: VideoConfig, path: str | Path, windows: list[tuple], use_adapter: bool = True
) -> list[ClipResult]:
    """Analyse several windows of one video, `cfg.eval.batch_size` at a time."""
    from core.generation import generate

    schema = load_task_schema(cfg.data)
    conversations = [
        prompt_messages(cfg.data, schema, video=sample_clip(path, cfg.data, start_s, end_s)) for start_s, end_s in windows
    ]
    texts = generate(
        model,
        processor,
        conversations,
        max_new_tokens=cfg.eval.max_new_tokens,
        use_adapter=use_adapter,
        batch_size=cfg.eval.batch_size,
    )
    return _results(cfg, texts, windows)


def analyze_clip(
    model,
    processor,
    cfg: VideoConfig,
    path: str | Path,
    start_s: float | None = None,
    end_s: float | None = None,
    use_adapter: bool = True,
) -> ClipResult:
    """Analyse one clip window; `use_adapter=False` answers as the base model.

    Raises:
        VideoError: The clip cannot be read or the window is outside it.
    """
    return analyze_windows(model, processor, cfg, path, [(start_s, end_s)], use_adapter)[0]


def rolling_windows(duration_s: float, window_s: float, stride_s: float | None = None) -> list[tuple[float, float]]:
    """Windows of `window_s` seconds every `stride_s` (default: back to back) covering the video.

    The last window ends at the end of the video; a video shorter than one window is one window.

    >>> rolling_windows(10.0, 4.0)
    [(0.0, 4.0), (4.0, 8.0), (6.0, 10.0)]
    >>> rolling_windows(6.0, 4.0, 1.0)
    [(0.0, 4.0), (1.0, 5.0), (2.0, 6.0)]
    >>> rolling_windows(3.0, 4.0)
    [(0.0, 3.0)]
    """
    if window_s <= 0 or (stride_s is not None and stride_s <= 0):
        raise ValueError(f"window and stride must be positive, got window {window_s}, stride {stride_s}")
    stride_s = stride_s or window_s
    if duration_s <= window_s:
        return [(0.0, duration_s)]
    windows, start = [], 0.0
    while start + window_s < duration_s - 1e-6:
        windows.append((round(start, 3), round(start + window_s, 3)))
        start += stride_s
    windows.append((round(duration_s - window_s, 3), round(duration_s, 3)))
    return windows


def analyze_rolling(
    model,
    processor,
    cfg: VideoConfig,
    path: str | Path,
    window_s: float = 4.0,
    stride_s: float | None = None,
    use_adapter: bool = True,
) -> list[ClipResult]:
    """Analyse a whole video window by window (see `rolling_windows`); one result per window, in time order."""
    from core.media.video import probe_video

    windows = rolling_windows(probe_video(path).duration_s, window_s, stride_s)
    return analyze_windows(model, processor, cfg, path, windows, use_adapter)


def load_run(run_dir: str | Path):
    """(model, processor, cfg) of a run: its base model with the run's final adapter attached."""
    from core.config import validate_config
    from core.models import load_processor, load_tuned
    from core.runs import RunDir

    run = RunDir(run_dir)
    cfg = validate_config(VideoConfig, run.read_config(), source=str(run.config_path))
    cfg = cfg.model_copy(update={"data": cfg.final_data})  # sample as the final weights were trained
    artifact = run.final_artifact()
    if artifact is None:
        raise FileNotFoundError(f"{run.path}: no adapter/ or model/ yet (state: {run.read_status()['state']})")
    return load_tuned(cfg.model, artifact, cfg.finetune), load_processor(cfg.model), cfg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="Finished run folder")
    parser.add_argument("--video", required=True, help="Video file")
    parser.add_argument("--start", type=float, default=None, help="Window start in seconds")
    parser.add_argument("--end", type=float, default=None, help="Window end in seconds")
    parser.add_argument("--rolling", action="store_true", help="Analyse the whole video in consecutive windows")
    parser.add_argument("--window", type=float, default=4.0, help="Rolling window length in seconds")
    parser.add_argument("--stride", type=float, default=None, help="Rolling stride in seconds (default: the window)")
    parser.add_argument("--base", action="store_true", help="Answer with the base model (adapter off)")
    args = parser.parse_args(argv)
    from core.config import ConfigError
    from core.media.errors import MediaError

    try:
        model, processor, cfg = load_run(args.run)
        if args.rolling:
            results = analyze_rolling(model, processor, cfg, args.video, args.window, args.stride, not args.base)
        else:
            results = [analyze_clip(model, processor, cfg, args.video, args.start, args.end, not args.base)]
    except (ConfigError, MediaError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for result in results:
        print(json.dumps(asdict(result), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
