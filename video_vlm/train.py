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
from core.preference import DPO, PAIRS, PAIRS_FILE
from core.processes import is_main_process
from core.runs import RunDir
from video_vlm.config import SFTSection, StageSection, VideoConfig, VideoDataSection

DEFAULT_CONFIG = "video_vlm/configs/internvl3_8b_sft.yaml"


def sft_arguments(cfg: VideoConfig, train: SFTSection, run: RunDir, output_dir: Path):
    """TRL's SFTConfig for one stage; `train.trainer` passes through verbatim and TRL validates it."""
    from trl import SFTConfig

    from core.models import trainer_config

    return trainer_config(
        SFTConfig,
        cfg,
        run,
        output_dir,
        "train",
        train.trainer,
        max_steps=train.max_steps,
        num_train_epochs=train.num_train_epochs,
        per_device_train_batch_size=train.per_device_train_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler_type,
        warmup_steps=train.warmup_steps,
        optim=train.optim,
        seed=train.seed,
        # Our collator builds input_ids and labels; TRL must neither tokenise nor truncate (max_length is
        # enforced before launch and per sample in the collator, by refusing, never by cutting).
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
    )


def stage_plan(cfg: VideoConfig) -> list[tuple[StageSection | None, VideoDataSection, SFTSection]]:
    """(stage, data, train) in order; one unnamed stage when the config has no curriculum."""
    if not cfg.stages:
        return [(None, cfg.data, cfg.train)]
    try:
        return [(stage, *cfg.stage_sections(stage)) for stage in cfg.stages]
    except ValueError as err:
        raise ConfigError(str(err)) from None


def prepare_data(processor, data: VideoDataSection, train: SFTSection, label: str, skip_log: Path | None = None,
                 stage: str | None = None):
    """Verified training rows of one stage. A sample past `train.max_length` is skipped, named and recorded in
    `skip_log` like an unreadable clip, within `data.max_skipped_fraction`; frames and prompt that leave no room
    for any answer refuse the launch."""
    from video_vlm.collator import (
        budget_problem,
        format_budget,
        over_long_items,
        read_skips,
        record_skip,
        token_budget,
    )
    from video_vlm.task import load_task_schema, split_items, training_dataset, verified_items

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
    recorded = {(record["line_no"], record["kind"]) for record in read_skips(skip_log, stage)}  # from a relaunch
    for (item, needed), line in zip(too_long, lines):
        message = (
            f"{item.video}: the answer is {needed - fixed} tokens, so the sample needs {needed} > train.max_length "
            f"{train.max_length} (skipped, never truncated); shorten the answer or raise train.max_length"
        )
        print(f"{label}skipped {line.split(' (')[0]} [too_long]: {message}", flush=True)
        if is_main_process() and (item.line_no, "too_long") not in recorded:
            record_skip(skip_log, vars(item), "too_long", message, stage)
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
    from trl import SFTTrainer

    from core.checkpoints import agreed_by_all_ranks
    from core.files import link_tree
    from core.metrics import GracefulStop, RunMetricsCallback
    from core.models import apply_memory_cap, load_processor, load_stage_start, release_memory, trainable_summary
    from core.runs import holds_adapter
    from core.stages import train_stage
    from video_vlm.collator import SkippedClipsCallback, VideoSFTCollator

    # Model: the processor first, so the token budget is checked before loading any weights
    cap = apply_memory_cap(cfg.model.max_memory_gb)
    if cap:
        print(cap, flush=True)
    dpo = cfg.method == DPO
    # A pairs file of your own is checked line by line before any weights (or the processor) load.
    user_pairs = None
    if dpo and cfg.pairs.file:
        from video_vlm.pairs import training_pairs

        user_pairs = training_pairs(cfg, run)
    processor = load_processor(cfg.model)

    # Dataset: verified items per stage; bad lines and over-long samples are counted and left out
    plan = []
    for stage, data, train_section in (stage_plan(cfg) if cfg.stages or not dpo else []):
        label = f"[{stage.name}] " if stage else ""
        schema, dataset, counts = prepare_data(
            processor, data, train_section, label, run.skipped_path, stage.name if stage else None
        )
        plan.append((stage, data, train_section, schema, dataset, counts))
    if is_main_process() and plan:
        run.update_status(data={(s.name if s else "train"): c for s, *_, c in plan})
    stages = [s.name for s, *_ in plan if s] + (([DPO] if cfg.pairs.file else [PAIRS, DPO]) if dpo else [])

    # Training: stage by stage, each from the previous stage's weights with a fresh optimizer and schedule
    previous: Path | None = None
    result: Path | None = None
    for stage, data, train_section, schema, dataset, counts in plan:
        name = stage.name if stage else None
        done = agreed_by_all_ranks(run.stage_artifact(name) if name else None)
        if done:
            print(f"[{name}] finished earlier: {done}", flush=True)
            previous = result = done
            continue
        model = load_stage_start(cfg.model, cfg.finetune, previous)
        print(f"[{name or 'train'}] starting from {previous or cfg.model.name}; {trainable_summary(model)}", flush=True)
        collator = VideoSFTCollator(
            processor, data, schema, train_section.max_length, replacements=list(dataset), seed=train_section.seed,
            skip_log=run.skipped_path, stage=name,
        )
        training_clips = len(dataset) + counts["problems"].get("too_long", 0)  # over-long ones count as skipped
        skipped = SkippedClipsCallback(run.skipped_path, training_clips, data.max_skipped_fraction, stage=name)
        output_dir = run.checkpoints_dir / name if name else run.checkpoints_dir
        trainer = SFTTrainer(
            model=model,
            args=sft_arguments(cfg, train_section, run, output_dir),
            data_collator=collator,
            train_dataset=dataset,
            processing_class=processor,
            callbacks=[skipped, RunMetricsCallback(run, stage=name), GracefulStop(control)],
        )
        result = train_stage(trainer, run, control, output_dir, run.artifact_dir(name, cfg.finetune.method == "full"),
                             cfg.model.max_memory_gb, stage=name, stages=stages)
        if result is None:  # stopped: the latest checkpoint is where the next launch resumes
            return
        previous = result
        del trainer, model, collator
        release_memory()
    if dpo:
        return train_dpo(cfg, run, control, processor, previous, stages, user_pairs)
    if cfg.stages and result is not None and is_main_process():
        final = run.adapter_dir if holds_adapter(result) else run.model_dir
        link_tree(result, final)
        print(f"saved {final} (stage {cfg.stages[-1].name})", flush=True)


def train_dpo(cfg: VideoConfig, run: RunDir, control: RunControl, processor, start: Path | None, stages: list[str],
              user_pairs: list[dict] | None = None) -> None:
    """Pairs, then DPO, both from `start` (the last SFT stage's weights), else `pairs.source_run`'s, else the
    base; `user_pairs` (from `pairs.file`) replace the pairs stage."""
    from trl import DPOTrainer

    from core.dpo import dpo_arguments, reference_model, source_run_start
    from core.metrics import GracefulStop, RunMetricsCallback
    from core.models import load_stage_start, trainable_summary
    from core.preference import write_pairs
    from core.stages import train_stage
    from video_vlm.collator import SkippedClipsCallback, VideoDPOCollator
    from video_vlm.pairs import pairs_dataset, run_pairs_stage, training_pairs
    from video_vlm.task import load_task_schema

    start = source_run_start(cfg.pairs, cfg.model) or start
    model = load_stage_start(cfg.model, cfg.finetune, start)
    print(f"[{PAIRS}] starting from {start or cfg.model.name}; {trainable_summary(model)}", flush=True)

    # Pairs: the start's own answers, ranked by the evaluation's scores (skipped with pairs.file, or once written)
    if user_pairs is not None:
        write_pairs(run, user_pairs)  # the usable lines, for the run view and the record
    elif not (run.path / PAIRS_FILE).exists():
        if run_pairs_stage(cfg, run, control, processor, model, stages) is None:
            return
    dataset = pairs_dataset(user_pairs or training_pairs(cfg, run))

    # DPO: TRL's loss on the recipe's batches; the reference is the start (the adapter switched off under LoRA)
    data = cfg.final_data
    max_length = cfg.stage_sections(cfg.stages[-1])[1].max_length if cfg.stages else cfg.train.max_length
    collator = VideoDPOCollator(processor, data, load_task_schema(data), max_length, replacements=list(dataset),
                                seed=cfg.dpo.seed, skip_log=run.skipped_path, stage=DPO)
    skipped = SkippedClipsCallback(run.skipped_path, len(dataset), data.max_skipped_fraction, stage=DPO)
    output_dir = run.checkpoints_dir / DPO
    trainer = DPOTrainer(
        model=model,
        ref_model=reference_model(cfg.model, cfg.finetune, start),
        args=dpo_arguments(cfg, cfg.dpo, run, output_dir),
        data_collator=collator,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[skipped, RunMetricsCallback(run, stage=DPO), GracefulStop(control)],
    )
    train_stage(trainer, run, control, output_dir, run.artifact_dir(None, cfg.finetune.method == "full"),
                cfg.model.max_memory_gb, stage=DPO, stages=stages)


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
