"""Metrics and lifecycle callbacks shared by both recipes.

`metrics.jsonl` is the single source for live curves: every `on_log` appends one line. W&B, when on,
receives the same numbers through transformers' own callback; it is never the only sink.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from core.checkpoints import record_checksums
from core.control import RunControl
from core.files import write_json_atomic
from core.processes import is_main_process
from core.runs import RunDir


def clean_number(value: Any) -> Any:
    """JSON-safe numbers: tensors become floats, NaN/inf become None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunMetricsCallback(TrainerCallback):
    """Keeps the run folder's contract during training: one `metrics.jsonl` line per log event, the step and
    total in `status.json`, and a `checksums.json` that marks each saved checkpoint complete.

    On a resume it first drops the metric and rollout lines logged after the checkpoint's step: the
    trainer logs those steps again, and a curve must not show them twice.
    """

    def __init__(self, run: RunDir, stage: str | None = None):
        self.run = run
        self.stage = stage
        self.memory_reported = False

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            if state.global_step:
                dropped = self.run.forget_after(state.global_step, self.stage)
                if dropped:
                    print(f"resumed at step {state.global_step}: dropped {dropped} log line(s) from after it", flush=True)
            fields = {"step": state.global_step, "total": state.max_steps}
            url = wandb_run_url()
            if url:
                fields["wandb_url"] = url
            if self.run.read_status().get("state") != "stopping":
                self.run.write_status("running", pid=os.getpid(), **fields)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": clean_number(state.epoch), "time": time.time()}
        if self.stage:
            record["stage"] = self.stage
        for key, value in logs.items():
            value = clean_number(value)
            if isinstance(value, (int, float)) or value is None:
                record[key] = value
        peak = measured_peak_gib()
        if peak is not None and "loss" in logs:
            record["peak_memory_gib"] = round(peak["allocated"], 2)
        self.run.append_metric(record)

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.run.update_progress(state.global_step, state.max_steps)
            if not self.memory_reported:
                self.memory_reported = True
                print(report_measured_memory(self.run), flush=True)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            started = time.monotonic()
            record_checksums(checkpoint)
            print(f"saved {checkpoint} (checksummed in {time.monotonic() - started:.1f} s)", flush=True)


class GracefulStop(TrainerCallback):
    """Hands the Trainer a stop at the next step boundary, where saving is safe: the decision is the run's
    `RunControl.stop_at_step_boundary` (SIGTERM, or a stop request in the run folder, agreed by every rank)."""

    def __init__(self, control: RunControl):
        self.control = control

    def on_step_end(self, args, state, control, **kwargs):
        if self.control.stop_at_step_boundary():
            control.should_save = True
            control.should_training_stop = True


def measured_peak_gib() -> dict[str, float] | None:
    """Peak CUDA memory of this process so far: allocated by tensors, and reserved by the allocator."""
    import torch

    if not torch.cuda.is_available():
        return None
    return {"allocated": torch.cuda.max_memory_allocated() / 2**30, "reserved": torch.cuda.max_memory_reserved() / 2**30}


def report_measured_memory(run: RunDir) -> str:
    """After the first step: the measured peak next to the launch's estimate, kept in `estimate.json` too, so
    the estimate can be checked (and improved) against real runs."""
    estimate = run.read_estimate()
    estimated = f"estimated {estimate['peak_memory_gib']:.1f} GiB" if estimate else "no estimate for this config"
    peak = measured_peak_gib()
    if peak is None:
        return f"memory after the first step: not measured (no CUDA here); {estimated}"
    if estimate:
        estimate["measured_peak_gib"] = {name: round(value, 2) for name, value in peak.items()}
        write_json_atomic(run.estimate_path, estimate)
    return (
        f"memory after the first step: measured peak {peak['allocated']:.1f} GiB allocated "
        f"({peak['reserved']:.1f} GiB reserved); {estimated}"
    )


def wandb_run_url() -> str | None:
    """The live W&B run's URL when one is online, else None."""
    if "wandb" not in sys.modules:
        return None
    import wandb

    run = getattr(wandb, "run", None)
    if run is None or getattr(run.settings, "mode", "") == "offline":
        return None
    return getattr(run, "url", None)


def configure_wandb(report_to: str, project: str, run: RunDir) -> list[str]:
    """Set W&B's environment for this run and return the trainer's `report_to` list.

    Online when WANDB_API_KEY is set, offline otherwise (synced later with `wandb sync`), off for `none`.
    """
    from core.credentials import wandb_mode

    mode, message = wandb_mode(report_to)
    print(message, flush=True)
    if mode == "disabled":
        return ["none"]
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_PROJECT", project)
    os.environ.setdefault("WANDB_DIR", str(run.path))
    os.environ.setdefault("WANDB_NAME", run.id)
    return ["wandb"]


class RolloutRecorder:
    """Records each scored GRPO batch to `rollouts.jsonl`: label, completion and every reward.

    It wraps the reward functions rather than changing them, so rewards stay pure. TRL calls the reward
    functions in order on the same completions; the last wrapper writes the rows. Only rank 0 writes,
    and only every `every`-th step, to keep the file small on long runs.
    """

    def __init__(
        self,
        run: RunDir,
        reward_funcs,
        text_of,
        columns: tuple[str, ...] = ("answer", "label", "image_path"),
        every: int = 1,
    ):
        self.run = run
        self.text_of = text_of  # the recipe's own completion -> text, the same one its rewards read
        self.reward_funcs = list(reward_funcs)
        self.columns = columns
        self.every = every
        self.scores: dict[str, list[float]] = {}

    def wrapped(self) -> list:
        import functools

        wrappers = []
        for index, func in enumerate(self.reward_funcs):
            last = index == len(self.reward_funcs) - 1

            @functools.wraps(func)
            def wrapper(completions, __func=func, __last=last, **kwargs):
                scores = __func(completions, **kwargs)
                self.scores[__func.__name__] = list(scores)
                if __last:
                    self.write(completions, kwargs)
                return scores

            wrappers.append(wrapper)
        return wrappers

    def write(self, completions, kwargs) -> None:
        state = kwargs.get("trainer_state")
        # Rewards are scored while step N is computed, when global_step still reads N - 1: the rows belong to
        # step N, the number the progress bar and the curves show once it ends.
        step = getattr(state, "global_step", 0) + 1
        if not is_main_process() or step % self.every:
            return
        for i, completion in enumerate(completions):
            row = {"step": step, "completion": self.text_of(completion)}
            for column in self.columns:
                values = kwargs.get(column)
                if isinstance(values, list) and i < len(values) and isinstance(values[i], (str, int, float)):
                    row[column] = values[i]
            row["rewards"] = {name: clean_number(float(s[i])) if s[i] is not None else None for name, s in self.scores.items()}
            self.run.append_jsonl(self.run.rollouts_path, row)

