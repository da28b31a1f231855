"""The Trainer callbacks every stage installs: the run folder's contract during training, and the graceful stop.

`metrics.jsonl` is the single source for live curves: every `on_log` appends one line (`RunMetricsCallback`).
A stop (SIGTERM, or a request in the run folder) reaches the Trainer at the next step boundary (`GracefulStop`).
"""

from __future__ import annotations

import os
import time

from transformers import TrainerCallback

from core.checkpoints import checkpoint_path, record_checksums
from core.control import RunControl
from core.metrics import clean_number, measured_peak_gib, report_measured_memory, wandb_run_url
from core.runs import RunDir


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
        checkpoint = checkpoint_path(args.output_dir, state.global_step)
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
