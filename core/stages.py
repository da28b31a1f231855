"""One training stage, from its latest checkpoint to its saved weights: the tail every recipe's stage shares.

A stage is a Trainer over one folder of checkpoints (`checkpoints/` or `checkpoints/<stage>/`). It resumes from
the newest complete checkpoint there, turns an out-of-memory error into a message that says what to change, and
saves its weights where `RunDir.artifact_dir` says, unless a stop came first (then the last checkpoint is what
remains, and the next launch resumes from it).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.control import RunControl
from core.processes import is_main_process
from core.runs import RunDir


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

    from core.checkpoints import resume_point, train_from
    from core.models import memory_hint, save_trained

    if control.poll():  # a stop during start-up: nothing trained in this stage, nothing to save
        return None
    if is_main_process() and stage:
        # Steps count from 0 in each stage: the trainer's first callback writes the real step and total.
        run.write_status("running", pid=os.getpid(), stage=stage, stages=stages or [stage], step=0, total=None)
    try:
        train_from(trainer, resume_point(checkpoints), log=lambda line: print(line, flush=True))
    except torch.OutOfMemoryError as err:
        raise RuntimeError(memory_hint(err, max_memory_gb)) from err
    if control.requested:
        return None
    save_trained(trainer, out)
    if trainer.is_world_process_zero():
        print(f"saved {out}", flush=True)
    return out
