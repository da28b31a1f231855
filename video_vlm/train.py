"""Supervised fine-tuning of InternVL3 on dashcam clips: JSON answers, one stage or a curriculum.

    python -m video_vlm.train --config video_vlm/configs/internvl3_8b_sft.yaml [--run-dir D] [key=value ...]

The run folder (see core/runs.py) is created or resumed: a folder holding a checkpoint continues from it.
SIGTERM saves a checkpoint and ends with state `stopped`; a finished run leaves `adapter/` (`model/` for
full fine-tuning).

Curriculum: with `stages:` in the config, the stages run in order, each with its own data and train
overrides, a fresh optimizer and schedule, and the previous stage's weights as its start. Stage `s`
checkpoints under `checkpoints/s/` and leaves `stages/s/adapter`; a relaunch skips finished stages and
resumes the interrupted one from its latest checkpoint. The run's `adapter/` is the last stage's.

DPO (`method: dpo`): after the SFT stages of `stages:` (none without a curriculum), a `pairs` stage samples
answers per training clip window from their weights (else `pairs.source_run`'s, else the base model's) and ranks
them with the evaluation's own scores (video_vlm/pairs.py), then a `dpo` stage trains best against worst with
TRL's DPOTrainer and loss, on batches from the recipe's own collator (`VideoDPOCollator`: frames sampled as in
SFT), from those same weights; the run's `adapter/` or `model/` is DPO's. `pairs.file` trains on your own pairs
instead. A relaunch keeps the pairs sampled so far and resumes DPO from its latest checkpoint.

torch, transformers and TRL are imported inside the functions: the CLI takes the GPU lock first, so a
second launch is told "GPU busy" in a second instead of after the libraries load.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import run_training_main
from core.config import ConfigError
from core.control import RunControl
from core.dpo import unused_stages_problem
from core.preference import DPO, PAIRS
from core.processes import is_main_process
from core.runs import RunDir
from core.stages import dpo_stage, finished_stage, sft_arguments, sft_stage
from video_vlm.config import SFTSection, StageSection, VideoConfig, VideoDataSection

DEFAULT_CONFIG = "video_vlm/configs/internvl3_8b_sft.yaml"


def stage_plan(cfg: VideoConfig) -> list[tuple[StageSection | None, VideoDataSection, SFTSection]]:
    """(stage, data, train) in order; one unnamed stage when the config has no curriculum."""
    if not cfg.stages:
        return [(None, cfg.data, cfg.train)]
    try:
        return [(stage, *cfg.stage_sections(stage)) for stage in cfg.stages]
    except ValueError as err:
        raise ConfigError(str(err)) from None


def prepare_data(processor, data: VideoDataSection, train: SFTSection, label: str, run: RunDir | None = None,
                 stage: str | None = None):
    """Verified training rows of one stage. A sample past `train.max_length` is skipped, named and recorded in the
    run's `skipped.jsonl` like an unreadable clip, within `data.max_skipped_fraction`; frames and prompt that leave
    no room for any answer refuse the launch."""
    from video_vlm.skipped_clips import skip_record
    from video_vlm.task import load_task_schema, split_items, training_dataset, verified_items
    from video_vlm.token_budget import budget_problem, format_budget, over_long_items, token_budget

    schema = load_task_schema(data)
    report = verified_items(data, schema, write_manifest=is_main_process())
    print(f"{label}{report.summary()}", flush=True)
    for problem in report.problems[:10]:
        print(f"  skipped [{problem.kind}] {problem.message}", flush=True)
    items = split_items(report, "train", data.max_train_samples, data.seed)
    if not items:
        raise ConfigError(f"data.root: {data.root} has no training clip (all {len(report.items)} valid clips are in val)")
    shortest, too_long = over_long_items(processor, data, schema, items, train.max_length)
    problem = budget_problem(shortest, train.max_length)
    if problem:  # even the shortest answer does not fit: the frames and prompt are the problem, not a line
        print(label + format_budget(shortest, train.max_length), flush=True)
        raise ConfigError(problem)
    fixed = shortest["total"] - shortest["answer_tokens"]
    lines = [f"metadata.jsonl line {item.line_no} ({item.video}, {needed} tokens)" for item, needed in too_long]
    if len(too_long) > data.max_skipped_fraction * len(items):
        shown = "; ".join(lines[:5]) + (f"; and {len(lines) - 5} more" if len(lines) > 5 else "")
        raise ConfigError(
            f"{len(too_long)} of {len(items)} training samples need more than train.max_length {train.max_length} "
            f"tokens, more than data.max_skipped_fraction={data.max_skipped_fraction} allows: {shown}. Raise "
            f"train.max_length to at least {max(needed for _, needed in too_long)} or shorten those answers; "
            "samples are never truncated."
        )
    recorded = {(record["line_no"], record["kind"]) for record in (run.read_skips(stage) if run else [])}  # from a relaunch
    for (item, needed), line in zip(too_long, lines):
        message = (
            f"{item.video}: the answer is {needed - fixed} tokens, so the sample needs {needed} > train.max_length "
            f"{train.max_length} (skipped, never truncated); shorten the answer or raise train.max_length"
        )
        print(f"{label}skipped {line.split(' (')[0]} [too_long]: {message}", flush=True)
        if run and is_main_process() and (item.line_no, "too_long") not in recorded:
            run.record_skip(skip_record(vars(item), "too_long", message, stage))
    left_out = {id(item) for item, _ in too_long}
    items = [item for item in items if id(item) not in left_out]
    longest = max(items, key=lambda item: len(schema.render_label(item.label)))
    budget = token_budget(processor, data, schema, longest.label)
    print(label + format_budget(budget, train.max_length), flush=True)
    problem = budget_problem(budget, train.max_length)
    if problem:
        raise ConfigError(problem)
    counts = {"train": len(items), "skipped": len(report.problems) + len(too_long), "problems": dict(report.counts)}
    if too_long:
        counts["problems"]["too_long"] = len(too_long)
    return schema, training_dataset(items, report.root), counts


def train(cfg: VideoConfig, run: RunDir, control: RunControl) -> None:
    from core.files import link_tree
    from core.models import apply_memory_cap, load_processor
    from core.runs import holds_adapter
    from video_vlm.collator import VideoSFTCollator
    from video_vlm.pairs import pairs_dataset, run_pairs_stage, training_pairs
    from video_vlm.skipped_clips import SkippedClipsCallback

    # Model: the processor first, so the token budget is checked before loading any weights
    cap = apply_memory_cap(cfg.model.max_memory_gb)
    if cap:
        print(cap, flush=True)
    dpo = cfg.method == DPO
    # A pairs file of your own is checked line by line before any weights (or the processor) load.
    user_pairs = training_pairs(cfg, run) if dpo and cfg.pairs.file else None
    processor = load_processor(cfg.model)

    # Dataset: verified items per stage; bad lines and over-long samples are counted and left out
    plan = []
    for stage, data, train_section in (stage_plan(cfg) if cfg.stages or not dpo else []):
        label = f"[{stage.name}] " if stage else ""
        schema, dataset, counts = prepare_data(
            processor, data, train_section, label, run, stage.name if stage else None
        )
        plan.append((stage, data, train_section, schema, dataset, counts))
    if is_main_process() and plan:
        run.update_status(data={(s.name if s else "train"): c for s, *_, c in plan})
    stages = [s.name for s, *_ in plan if s] + (([DPO] if cfg.pairs.file else [PAIRS, DPO]) if dpo else [])

    # Training (SFT): stage by stage, each from the previous stage's weights with a fresh optimizer and schedule
    previous: Path | None = None
    for stage, data, train_section, schema, dataset, counts in plan:
        name = stage.name if stage else None
        done = finished_stage(run, name)
        if done:
            previous = done
            continue
        collator = VideoSFTCollator(
            processor, data, schema, train_section.max_length, replacements=list(dataset), seed=train_section.seed,
            run=run, stage=name,
        )
        training_clips = len(dataset) + counts["problems"].get("too_long", 0)  # over-long ones count as skipped
        skipped = SkippedClipsCallback(run, training_clips, data.max_skipped_fraction, stage=name)
        previous = sft_stage(
            cfg, run, control, processor, start=previous, stage=name, stages=stages,
            args=sft_arguments(cfg, train_section, run, run.stage_checkpoints_dir(name)),
            dataset=dataset, collator=collator, callbacks=[skipped],
        )
        if previous is None:  # stopped: the latest checkpoint is where the next launch resumes
            return

    # Pairs, then DPO (video_vlm/pairs.py): answers ranked by the evaluation's scores, batched by the recipe's collator
    if dpo:
        return dpo_stage(
            cfg, run, control, processor, previous, stages, user_pairs,
            sample=lambda model: run_pairs_stage(cfg, run, control, processor, model, stages),
            read=lambda: training_pairs(cfg, run), dataset=pairs_dataset,
            batches=lambda dataset: dpo_batches(cfg, run, processor, dataset),
        )
    if cfg.stages and previous is not None and is_main_process():
        final = run.adapter_dir if holds_adapter(previous) else run.model_dir
        link_tree(previous, final)
        print(f"saved {final} (stage {cfg.stages[-1].name})", flush=True)


def dpo_batches(cfg: VideoConfig, run: RunDir, processor, dataset):
    """(collator, callbacks) of the DPO stage: frames sampled as the last SFT stage sampled them, in TRL's layout
    (chosen rows, then rejected rows, with a `completion_mask`), and a clip that cannot be read skipped and counted."""
    from video_vlm.collator import VideoDPOCollator
    from video_vlm.skipped_clips import SkippedClipsCallback
    from video_vlm.task import load_task_schema

    data = cfg.final_data
    max_length = cfg.stage_sections(cfg.stages[-1])[1].max_length if cfg.stages else cfg.train.max_length
    collator = VideoDPOCollator(processor, data, load_task_schema(data), max_length, replacements=list(dataset),
                                seed=cfg.dpo.seed, run=run, stage=DPO)
    return collator, [SkippedClipsCallback(run, len(dataset), data.max_skipped_fraction, stage=DPO)]


def main(argv=None) -> int:
    return run_training_main(
        argv, config_cls=VideoConfig, prefix="video", default_config=DEFAULT_CONFIG, description=__doc__, train=train,
        modality="video", estimate="video_vlm.estimate", preflight=preflight,
    )


def preflight(cfg: VideoConfig) -> str | None:
    """Why this config must not start, before the GPU lock is taken."""
    return unused_stages_problem(cfg.pairs, [stage.name for stage in cfg.stages]) if cfg.method == DPO else None


if __name__ == "__main__":
    sys.exit(main())
