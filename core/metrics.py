"""Metrics and lifecycle callbacks shared by both recipes.

`metrics.jsonl` is the single source for live curves: every `on_log` appends one line. W&B, when on,
receives the same numbers through transformers' own callback; it is never the only sink.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from typing import Any, Iterator

from transformers import TrainerCallback

from core.jobs import acquire_gpu_lock, release_gpu_lock
from core.runs import RunDir, is_main_process


def clean_number(value: Any) -> Any:
    """JSON-safe numbers: tensors become floats, NaN/inf become None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunMetricsCallback(TrainerCallback):
    """Appends each log event to `metrics.jsonl` and keeps `status.json`'s step and total current."""

    def __init__(self, run: RunDir, stage: str | None = None):
        self.run = run
        self.stage = stage

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            fields = {"step": state.global_step, "total": state.max_steps}
            url = wandb_run_url()
            if url:
                fields["wandb_url"] = url
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
        self.run.append_metric(record)

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.run.update_progress(state.global_step, state.max_steps)


class GracefulStop(TrainerCallback):
    """Turns SIGTERM (the UI's Stop) into a checkpoint save and a clean end of training.

    The signal only sets a flag; the trainer acts on it at the next step boundary, where saving is safe.
    Under several processes the ranks agree on the flag, so they stop at the same step.
    """

    def __init__(self):
        self.requested = False
        self.previous = {sig: signal.signal(sig, self.request) for sig in (signal.SIGTERM, signal.SIGINT)}

    def close(self) -> None:
        """Give the signals back to whoever handled them before (matters when training runs in-process)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def request(self, signum, frame):
        self.requested = True
        print(f"received {signal.Signals(signum).name}: saving a checkpoint and stopping", file=sys.stderr, flush=True)

    def any_rank_requested(self) -> bool:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        import torch

        flag = torch.tensor([1.0 if self.requested else 0.0], device="cuda" if torch.cuda.is_available() else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self.any_rank_requested():
            self.requested = True
            control.should_save = True
            control.should_training_stop = True


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


@contextmanager
def run_lifecycle(run: RunDir, total: int | None = None) -> Iterator[GracefulStop]:
    """Hold the GPU lock and keep `status.json` truthful from start to end of a training job.

    Yields the GracefulStop callback to hand to the trainer. After the body: `stopped` if a stop was
    requested, else `finished`; any exception becomes `failed` with its message, then re-raises.
    """
    main = is_main_process()
    if main:
        acquire_gpu_lock(run.id, run.path.parent)  # GpuBusy leaves the folder's status untouched
        run.write_status("starting", pid=os.getpid(), pgid=os.getpgid(0), step=0, total=total)
    stopper = GracefulStop()
    try:
        yield stopper
    except BaseException as err:
        if main:
            message = f"{type(err).__name__}: {err}".strip()
            run.write_status("failed", error=message, traceback=traceback.format_exc(limit=8))
        raise
    else:
        if main:
            run.write_status("stopped" if stopper.requested else "finished")
    finally:
        stopper.close()
        if main:
            release_gpu_lock(run.path.parent)


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

            @functools.wraps(func)
            def wrapper(completions, __func=func, __last=index == len(self.reward_funcs) - 1, **kwargs):
                scores = __func(completions, **kwargs)
                self.scores[__func.__name__] = list(scores)
                if __last:
                    self.write(completions, kwargs)
                return scores

            wrappers.append(wrapper)
        return wrappers

    def write(self, completions, kwargs) -> None:
        state = kwargs.get("trainer_state")
        step = getattr(state, "global_step", 0)
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

