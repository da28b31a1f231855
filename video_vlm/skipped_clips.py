"""Skipped training clips: one `skipped.jsonl` record each (written by the collators, in whichever process they run),
counted into the logs and turned into a one-line failure past `data.max_skipped_fraction`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from transformers import TrainerCallback

from core.runs import RunDir, RunError


def skip_record(row: dict[str, Any], kind: str, message: str, stage: str | None) -> dict[str, Any]:
    """One skipped sample as `RunDir.record_skip` keeps it: which clip window and metadata line, and why.

    >>> skip_record({"video": "a.mp4", "line_no": 3, "start_s": 0.0, "end_s": 2.0, "label": {}}, "too_long", "m", None)
    {'video': 'a.mp4', 'line_no': 3, 'start_s': 0.0, 'end_s': 2.0, 'kind': 'too_long', 'message': 'm', 'stage': None}
    """
    return {
        "video": row.get("video"), "line_no": row.get("line_no"), "start_s": row.get("start_s"),
        "end_s": row.get("end_s"), "kind": kind, "message": message, "stage": stage,
    }


class TooManySkippedClips(RunError):
    """More than `data.max_skipped_fraction` of the training clips could not be used (the run fails with
    this one-line message, no traceback: the dataset is at fault, not the code)."""


class SkippedClipsCallback(TrainerCallback):
    """Adds the run's skip count to every log line, so `metrics.jsonl` shows bad clips as they happen, and
    fails the run once more than `max_fraction` of the `dataset_size` distinct training clips were skipped.

    The count comes from the run's `skipped.jsonl`, which the collators write from whichever process they run in; it is
    read again only when the file has grown. Put it before `RunMetricsCallback`: callbacks share one `logs`
    dict, in order. In a distributed job every rank reads its own machine's file, and all of them stop at the
    same step when any one is past the limit.
    """

    def __init__(self, run: RunDir, dataset_size: int, max_fraction: float, stage: str | None = None):
        self.run = run
        self.dataset_size = dataset_size
        self.max_fraction = max_fraction
        self.stage = stage
        self._read: tuple[int, list[dict[str, Any]]] = (-1, [])

    def skips(self) -> list[dict[str, Any]]:
        try:
            size = self.run.skipped_path.stat().st_size
        except OSError:
            size = 0
        if size != self._read[0]:
            self._read = (size, self.run.read_skips(self.stage))
        return self._read[1]

    def on_step_end(self, args, state, control, **kwargs):
        from core.processes import gathered_from_all_ranks

        skips = self.skips()
        distinct = {(record["video"], record["start_s"], record["end_s"]) for record in skips}
        seen = gathered_from_all_ranks((len(distinct), dict(Counter(record["kind"] for record in skips))))
        worst, kinds = max(seen, key=lambda counted: counted[0])
        if worst > self.max_fraction * self.dataset_size:
            where = f" (rank {seen.index((worst, kinds))}'s count)" if len(seen) > 1 else ""
            raise TooManySkippedClips(
                f"{worst} of {self.dataset_size} training clips could not be used{where} ({kinds}), more than "
                f"data.max_skipped_fraction={self.max_fraction}; each is listed in {self.run.skipped_path}. "
                "Check the dataset with: python -m video_vlm.data verify --root <data.root> --deep"
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:
            logs["skipped_clips"] = len(self.skips())

    def on_train_end(self, args, state, control, **kwargs):
        """One summary line of the stage's skips when its training ends (finished or stopped)."""
        skips = self.skips()
        if skips and state.is_world_process_zero:
            kinds = dict(Counter(record["kind"] for record in skips))
            print(f"[{self.stage or 'train'}] skipped {len(skips)} sample(s): {kinds} (listed in {self.run.skipped_path})",
                  flush=True)
