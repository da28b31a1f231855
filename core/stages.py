"""The training stages both recipes run: an SFT stage, the pairs-then-DPO stages, and the tail every stage shares.

A stage is a Trainer over one folder of checkpoints (`checkpoints/` or `checkpoints/<stage>/`). It resumes from
the newest complete checkpoint there, turns an out-of-memory error into a message that says what to change, and
saves its weights where `RunDir.artifact_dir` says, unless a stop came first (then the last checkpoint is what
remains, and the next launch resumes from it).

A recipe's train.py calls `sft_stage` and `dpo_stage` with what is its own (the rows, the collator, how its pairs
are sampled and checked); each builds its TRL trainer in plain sight here and runs it with `train_stage`. The
pairs CLIs (`python -m <recipe>.pairs`) share `pairs_main`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.config import OptimizerSection, PairsSection
from core.control import RunControl
from core.preference import DPO, PAIRS, source_run_option
from core.processes import is_main_process
from core.runs import RunDir


def finished_stage(run: RunDir, stage: str | None) -> Path | None:
    """The weights an earlier launch saved for `stage` (rank 0's answer, on every rank), else None: a relaunch skips
    a finished stage."""
    from core.processes import agreed_by_all_ranks

    done = agreed_by_all_ranks(run.stage_artifact(stage) if stage else None)
    if done:
        print(f"[{stage}] finished earlier: {done}", flush=True)
    return done


def sft_arguments(cfg, section: OptimizerSection, run: RunDir, output_dir: Path, name: str = "train"):
    """TRL's SFTConfig for an SFT stage whose collator builds input_ids and labels; `section.trainer` (the config's
    `name.trainer`) passes through verbatim and TRL validates it."""
    from trl import SFTConfig

    from core.models import trainer_config

    return trainer_config(
        SFTConfig, cfg, run, output_dir, name, section.trainer, **section.trainer_arguments(),
        # The collator builds input_ids and labels; TRL must neither tokenise nor truncate (a recipe refuses an
        # over-long sample before launch or in the collator, never cuts it).
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
    )


def sft_stage(cfg, run: RunDir, control: RunControl, processor, *, start: Path | None, stage: str | None,
              stages: list[str], args, dataset, collator, callbacks: Sequence = (),
              freeze_vision: bool = False) -> Path | None:
    """Supervised fine-tuning from `start` (None: the base model) on `dataset`, batched by the recipe's `collator`,
    with `args` from `sft_arguments`; returns the stage's saved weights, None when stopped.

    Args:
        stage: The stage's name in the run folder; None for a run of one unnamed stage (its weights are the run's).
        callbacks: The recipe's own, before the run's metrics and stop callbacks.
        freeze_vision: Keep the vision tower fixed.
    """
    from trl import SFTTrainer

    from core.callbacks import GracefulStop, RunMetricsCallback
    from core.models import freeze_vision_tower, load_stage_start, release_memory, trainable_summary

    model = load_stage_start(cfg.model, cfg.finetune, start)
    if freeze_vision:
        freeze_vision_tower(model)
    print(f"[{stage or 'train'}] starting from {start or cfg.model.name}; {len(dataset)} example(s); "
          f"{trainable_summary(model)}", flush=True)
    trainer = SFTTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[*callbacks, RunMetricsCallback(run, stage=stage), GracefulStop(control)],
    )
    out = train_stage(trainer, run, control, Path(args.output_dir), run.artifact_dir(stage, cfg.finetune.method == "full"),
                      cfg.model.max_memory_gb, stage=stage, stages=stages)
    del trainer, model
    release_memory()
    return out


def dpo_stage(
    cfg,
    run: RunDir,
    control: RunControl,
    processor,
    start: Path | None,
    stages: list[str],
    user_pairs: list[dict] | None,
    *,
    sample: Callable[[Any], Any],
    read: Callable[[], list[dict]],
    dataset: Callable[[list[dict]], Any],
    batches: Callable[[Any], tuple[Any, list]] | None = None,
) -> Path | None:
    """Pairs, then DPO, both from `start` (the stage before's weights), else `pairs.source_run`'s, else the base
    model; `user_pairs` (from `pairs.file`) replace the pairs stage. Returns the saved weights, None when stopped.

    Args:
        sample: model -> the recipe's pairs stage with that model (None when stopped); `pairs.jsonl` once written
            is kept, so a relaunch samples nothing again.
        read: () -> the run's pairs, each line checked (the recipe's `training_pairs`).
        dataset: pairs -> DPO's training dataset.
        batches: dataset -> (data collator, its callbacks); None leaves the batches to TRL (its vision collator).
    """
    from trl import DPOTrainer

    from core.callbacks import GracefulStop, RunMetricsCallback
    from core.dpo import dpo_arguments, reference_model, source_run_start
    from core.models import load_stage_start, trainable_summary
    from core.preference import write_pairs

    start = source_run_start(cfg.pairs, cfg.model) or start
    model = load_stage_start(cfg.model, cfg.finetune, start)
    print(f"[{PAIRS}] starting from {start or cfg.model.name}; {trainable_summary(model)}", flush=True)

    # Pairs: the start's own answers, ranked by the recipe's scorer (skipped with pairs.file, or once written)
    if user_pairs is not None:
        write_pairs(run, user_pairs)  # the usable lines, for the run view and the record
    elif not run.pairs_path.exists() and sample(model) is None:
        return None
    rows = dataset(user_pairs or read())

    # DPO: TRL's loss; the reference is the start (the adapter switched off under LoRA); weights to adapter/ or model/
    collator, callbacks = batches(rows) if batches else (None, [])
    output_dir = run.stage_checkpoints_dir(DPO)
    trainer = DPOTrainer(
        model=model,
        ref_model=reference_model(cfg.model, cfg.finetune, start),
        args=dpo_arguments(cfg, cfg.dpo, run, output_dir),
        data_collator=collator,
        train_dataset=rows,
        processing_class=processor,
        callbacks=[*callbacks, RunMetricsCallback(run, stage=DPO), GracefulStop(control)],
    )
    return train_stage(trainer, run, control, output_dir, run.artifact_dir(None, cfg.finetune.method == "full"),
                       cfg.model.max_memory_gb, stage=DPO, stages=stages)


def train_stage(
    trainer,
    run: RunDir,
    control: RunControl,
    checkpoints: Path,
    out: Path,
    max_memory_gb: float | None,
    stage: str | None = None,
    stages: list[str] | None = None,
) -> Path | None:
    """Train `trainer` from the newest checkpoint in `checkpoints`, then save its weights to `out`.

    Returns:
        `out`, or None when a stop was requested before or during training (nothing is saved then).
    """
    import torch

    from core.checkpoints import resume_arguments, resume_point, rotated_after_seal
    from core.models import memory_hint, save_trained

    if control.poll():  # a stop during start-up: nothing trained in this stage, nothing to save
        return None
    if is_main_process() and stage:
        # Steps count from 0 in each stage: the trainer's first callback writes the real step and total.
        run.write_status("running", pid=os.getpid(), stage=stage, stages=stages or [stage], step=0, total=None)
    try:
        with rotated_after_seal(trainer):
            resume = resume_arguments(trainer, resume_point(checkpoints), log=lambda line: print(line, flush=True))
            if resume is not None:
                trainer.train(**resume)
    except torch.OutOfMemoryError as err:
        raise RuntimeError(memory_hint(err, max_memory_gb)) from err
    if control.requested:
        return None
    save_trained(trainer, out)
    if trainer.is_world_process_zero():
        print(f"saved {out}", flush=True)
    return out


def pairs_main(argv, config_cls, modality: str, default_config: str, description: str,
               sampler: Callable[[Any, RunDir, RunControl], Callable[[Any], Any]]) -> int:
    """`python -m <modality>_vlm.pairs`: the pairs stage on its own, with the base model's answers or, with
    `--from RUN` (`pairs.source_run`), that run's.

    `sampler(cfg, run, control)` checks the recipe's data and loads its processor, before any weights load, and
    returns model -> the recipe's pairs stage with that model.
    """
    from core.cli import run_training_main

    def make_pairs(cfg, run: RunDir, control: RunControl) -> None:
        from core.dpo import load_sampling_model

        sample = sampler(cfg, run, control)
        model, source = load_sampling_model(cfg.pairs, cfg.model, cfg.finetune)
        print(f"[{PAIRS}] sampling with {source}", flush=True)
        sample(model)

    return run_training_main(
        source_run_option(argv), config_cls=config_cls, prefix=f"{modality}-pairs", default_config=default_config,
        description=description, train=make_pairs, modality=modality, preflight=lambda cfg: sampled_pairs_problem(cfg.pairs),
    )


def sampled_pairs_problem(pairs: PairsSection) -> str | None:
    """Why the pairs CLI must not start: `pairs.file` names pairs that exist already.

    >>> sampled_pairs_problem(PairsSection(file="mine.jsonl"))
    'pairs.file is set (mine.jsonl): these pairs exist already; drop pairs.file to sample new ones'
    """
    if pairs.file:
        return f"pairs.file is set ({pairs.file}): these pairs exist already; drop pairs.file to sample new ones"
    return None
