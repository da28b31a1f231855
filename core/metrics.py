"""What a run measures and where it goes besides `metrics.jsonl`: JSON-safe numbers, measured GPU memory, the W&B
sink, and the rollouts GRPO samples. The Trainer callbacks that write them are in `core.callbacks`.

W&B, when on, receives the same numbers through transformers' own callback; it is never the only sink.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

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

