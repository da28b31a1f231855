"""Preference pairs for video DPO: the model's own answers per training clip window, ranked by the schema's scores.

    python -m video_vlm.pairs --config video_vlm/configs/tiny_dpo.yaml [--from RUN] [--run-dir D] [key=value ...]

Samples `pairs.samples_per_prompt` answers per training clip window (frames sampled as SFT and evaluation sample
them, `video_vlm.task.clip_frames`, and the same prompt, `prompt_messages`) from the base model or from RUN's
weights (`pairs.source_run`), scores each with `video_vlm.evaluate.answer_score` (valid JSON, schema-valid and
field accuracy: evaluation's own parsing and field scores), and writes the best against the worst to the run
folder's `pairs.jsonl` (see core/preference.py). It is also the `pairs` stage of `method: dpo` runs.

A pairs line names its clip window and metadata line, never pixels: `video` (relative to `data.root`, or
absolute), `start_s`, `end_s`, `line_no`, `label`, and the schema's name. Your own file (`pairs.file`) needs `chosen`,
`rejected` and either `video` (with `start_s`/`end_s`, or neither for the whole clip) or the `line_no` of a
`metadata.jsonl` line, whose clip window it then takes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from core.config import ConfigError
from core.control import RunControl
from core.media.paths import in_dataset
from core.preference import PairsSummary, checked_training_pairs, sample_pairs
from core.runs import RunDir
from core.stages import pairs_main
from video_vlm.config import VideoConfig, VideoDataSection
from video_vlm.evaluate import answer_score
from video_vlm.schema import SchemaSpec

DEFAULT_CONFIG = "video_vlm/configs/tiny_dpo.yaml"


def prompt_id(item) -> str:
    """A clip window's name in the pairs files: its video, window and metadata line.

    >>> from video_vlm.data import Item
    >>> prompt_id(Item("videos/a.mp4", 1.0, 3.5, {}, "train", 7, 10.0))
    'videos/a.mp4@1.0-3.5#7'
    """
    return f"{item.video}@{item.start_s}-{item.end_s}#{item.line_no}"


def pair_prompts(items: list, limit: int | None = None) -> list[dict[str, Any]]:
    """One prompt per training clip window: the reference a pairs line carries, and the label that scores it."""
    items = items[:limit] if limit else items
    return [
        {"prompt_id": prompt_id(item), "video": item.video, "start_s": item.start_s, "end_s": item.end_s,
         "line_no": item.line_no, "label": item.label}
        for item in items
    ]


def answer_scores(schema: SchemaSpec, prompt: dict[str, Any], answers: list[str]) -> list[float]:
    """Each answer's score against the clip's label: the evaluation's own parsing and field scores."""
    return [answer_score(schema, text, prompt["label"]) for text in answers]


def answer_sampler(cfg: VideoConfig, model, processor, root: Path):
    """A batch of prompts -> `pairs.samples_per_prompt` sampled answers each, on the frames and prompt SFT uses."""
    from core.generation import generate
    from video_vlm.task import load_task_schema, prompt_messages, sample_clip

    data = cfg.final_data
    schema = load_task_schema(data)
    k = cfg.pairs.samples_per_prompt

    def sample(batch: list[dict[str, Any]]) -> list[list[str]]:
        clips = [sample_clip(in_dataset(root, p["video"]), data, p["start_s"], p["end_s"]) for p in batch]
        conversations = [prompt_messages(data, schema, video=clip) for clip in clips for _ in range(k)]
        texts = generate(
            model, processor, conversations, max_new_tokens=cfg.pairs.max_new_tokens, temperature=cfg.pairs.temperature,
            batch_size=len(conversations),
        )
        return [texts[i * k : (i + 1) * k] for i in range(len(batch))]

    return sample


def training_items(data: VideoDataSection):
    """(schema, dataset root, the verified training items) the pairs are sampled for."""
    from core.processes import is_main_process
    from video_vlm.task import load_task_schema, split_items, verified_items

    schema = load_task_schema(data)
    report = verified_items(data, schema, write_manifest=is_main_process())
    items = split_items(report, "train", data.max_train_samples, data.seed)
    if not items:
        raise ConfigError(f"data.root: {data.root} has no training clip (all {len(report.items)} valid clips are in val)")
    return schema, report.root, items


def run_pairs_stage(cfg: VideoConfig, run: RunDir, control: RunControl, processor, model,
                    stages: list[str] | None = None) -> PairsSummary | None:
    """Sample, score and pair the training clip windows with `model` (put in eval mode); None when stopped."""
    schema, root, items = training_items(cfg.final_data)
    model.eval()
    return sample_pairs(
        run, control, pair_prompts(items, cfg.pairs.max_prompts), answer_sampler(cfg, model, processor, Path(root)),
        lambda prompt, answers: answer_scores(schema, prompt, answers),
        batch_size=cfg.pairs.batch_size, samples_per_prompt=cfg.pairs.samples_per_prompt,
        temperature=cfg.pairs.temperature, model=cfg.model.name, schema=schema.name, stages=stages,
    )


def clip_problem(cfg: VideoConfig, line: dict[str, Any], by_line: dict[int, Any]) -> str | None:
    """What keeps a pairs line from naming a readable clip window (None when it does); fills in its `video`,
    `start_s` and `end_s` from its metadata line when it names only `line_no`. `video` stays as written: relative
    to the dataset root (as in `metadata.jsonl`), or absolute; `in_dataset` finds the file from any folder."""
    from core.media.errors import MediaError
    from core.media.video import probe_video, resolve_window

    if not line.get("video") and line.get("line_no") is not None:
        item = by_line.get(line["line_no"]) if isinstance(line["line_no"], int) else None
        if item is None:
            return f"line_no {line['line_no']!r} is not a usable line of {cfg.final_data.root}/metadata.jsonl"
        line.update(video=item.video, start_s=item.start_s, end_s=item.end_s)
    video = line.get("video")
    if not isinstance(video, str) or not video:
        return "no clip: give video (with start_s and end_s, or neither for the whole clip) or the line_no of a metadata line"
    window = [line.get("start_s"), line.get("end_s")]
    if any(value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))) for value in window):
        return f"start_s and end_s must be numbers of seconds, got {window}"
    path = in_dataset(cfg.final_data.root, video)
    try:
        resolve_window(probe_video(path), *window)
    except (MediaError, OSError, ValueError) as err:
        return f"clip {path} [{window[0]}, {window[1]}] cannot be used ({err})"
    return None


def training_pairs(cfg: VideoConfig, run: RunDir) -> list[dict[str, Any]]:
    """The pairs DPO trains on: `pairs.file`, else the run's own `pairs.jsonl`; bad lines reported and left out,
    pairs of another model or schema refused."""
    from video_vlm.task import load_task_schema, verified_items

    data = cfg.final_data
    schema = load_task_schema(data)
    by_line: dict[int, Any] | None = None

    def check(line: dict[str, Any]) -> str | None:
        nonlocal by_line
        if by_line is None and not line.get("video") and line.get("line_no") is not None:
            by_line = {item.line_no: item for item in verified_items(data, schema, write_manifest=False).items}
        return clip_problem(cfg, line, by_line or {})

    return checked_training_pairs(cfg.pairs, run, check, cfg.model.name, schema.name)


def pairs_dataset(pairs: list[dict[str, Any]]):
    """The DPO stage's rows: clip window, chosen and rejected texts; `VideoDPOCollator` makes the batches.

    The `images` column (always empty) is what makes TRL treat it as a vision dataset: it then leaves the rows
    untokenised for the collator, and keeps every column.
    """
    from datasets import Dataset

    return Dataset.from_list([
        {"video": p["video"], "start_s": p.get("start_s"), "end_s": p.get("end_s"), "line_no": p.get("line_no"),
         "chosen": p["chosen"], "rejected": p["rejected"], "images": None}
        for p in pairs
    ])


def pairs_sampler(cfg: VideoConfig, run: RunDir, control: RunControl):
    """For the pairs CLI: the data checked (a dataset with no training clip is refused) and the processor loaded
    before any weights, then model -> the pairs stage with it."""
    from core.models import load_processor

    training_items(cfg.final_data)
    processor = load_processor(cfg.model)
    return lambda model: run_pairs_stage(cfg, run, control, processor, model)


def main(argv=None) -> int:
    return pairs_main(argv, VideoConfig, "video", DEFAULT_CONFIG, __doc__, pairs_sampler)


if __name__ == "__main__":
    sys.exit(main())
