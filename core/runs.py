"""The run folder: the one contract between the processes that write a run and the UI that reads it.

`RunDir` owns every path in it, and `RunDir.LAYOUT` names each entry with its one writer: the trainer, the
launcher (a page's Start, Resume or Evaluate), evaluation, export, or whoever asks a run to stop. The README's
run-folder section lists the same entries, with what each holds.

The folder is also the control channel between the two containers, which share `runs/` but not a PID
namespace: liveness comes from the heartbeat's age, stopping is a request file, and a pid is signalled
only by a reader in the namespace that owns it.

    python -m core.runs status RUN_DIR       # one JSON object: state, step, total, heartbeat_age_s, owner
    python -m core.runs stop RUN_DIR [--wait S] [--all-here]
    python -m core.runs list                 # a table of every run under VLM_RUNS_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from core.checkpoints import CHECKSUMS, SET_ASIDE_PREFIX, checkpoint_step, complete_checkpoints
from core.config import HEARTBEAT_TIMEOUT_S, absolute_data_paths, read_yaml
from core.files import write_json_atomic
from core.jsonl import read_jsonl
from core.processes import is_main_process, owned_here, pid_alive, process_owner, world_size

STATES = ("starting", "running", "stopping", "stopped", "finished", "failed")
ACTIVE_STATES = ("starting", "running", "stopping")
ENDED_STATES = ("stopped", "finished", "failed")
CRASHED = "crashed"  # derived on read: an active run whose trainer stopped beating
# Environment the launcher hands its child: which pending launch it is, and when it was asked for.
LAUNCH_ID_ENV = "VLM_LAUNCH_ID"
LAUNCH_TIME_ENV = "VLM_LAUNCH_TIME"

# Who writes what in a run folder (RunDir.LAYOUT): each entry has one writer.
TRAINER, LAUNCHER, EVALUATION, EXPORT, STOP = "trainer", "launcher", "evaluation", "export", "stop"

# status.json is read-modified-written by the trainer's main thread and its heartbeat thread.
_status_lock = threading.RLock()


def runs_root() -> Path:
    """Where run folders live: `VLM_RUNS_DIR`, else `runs/` under the working directory."""
    return Path(os.environ.get("VLM_RUNS_DIR", "runs"))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def heartbeat_interval(timeout_s: float) -> float:
    """How often the trainer beats: several beats fit in the timeout, so one slow write never reads as a crash.

    >>> heartbeat_interval(60), heartbeat_interval(3), heartbeat_interval(600)
    (10.0, 0.5, 10.0)
    """
    return min(10.0, max(0.5, timeout_s / 6))


def new_run_id(prefix: str) -> str:
    """A sortable, readable id such as `image-20261121-203655`."""
    return f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def form_values_path(recipe_name: str, root: Path | None = None) -> Path:
    """A page's last form values for one recipe, beside the run folders (`.form-<recipe>.yaml`), so a reload keeps
    them."""
    return (root or runs_root()) / f".form-{recipe_name}.yaml"


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@dataclass(frozen=True)
class RunDir:
    """One run folder. Each entry has one writer (`LAYOUT`): a page writes only as the launcher and as stop, and
    otherwise reads."""

    path: Path

    # Every entry of a run folder and its one writer; the README's run-folder listing names the same ones
    # (tests/test_run_folder_contract.py holds them equal). A folder ends in "/".
    LAYOUT: ClassVar[dict[str, str]] = {
        "launch.yaml": LAUNCHER,  # a page's config for a new run, handed to the CLI as --config
        ".launch.lock": LAUNCHER,
        "train.log": LAUNCHER,  # the trainer's output, for a run a page started
        "eval.log": LAUNCHER,  # the evaluation's output, for one a page started
        "config.yaml": TRAINER,
        "status.json": TRAINER,  # the launcher writes its first `starting`, before the trainer exists
        "heartbeat": TRAINER,
        "estimate.json": TRAINER,
        "provenance.json": TRAINER,  # what made the run: written at its start, completed at its end (core/provenance.py)
        "metrics.jsonl": TRAINER,
        "rollouts.jsonl": TRAINER,
        "candidates.jsonl": TRAINER,
        "pairs.jsonl": TRAINER,
        "pairs_summary.json": TRAINER,
        "skipped.jsonl": TRAINER,
        "checkpoints/": TRAINER,
        "stages/": TRAINER,
        "adapter/": TRAINER,
        "model/": TRAINER,
        "stop.json": STOP,
        "eval/": EVALUATION,
        "merged/": EXPORT,
    }

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    # ------------------------------------------------------------------------------------------ paths
    @property
    def id(self) -> str:
        return self.path.name

    launch_config_path = property(lambda self: self.path / "launch.yaml")
    launch_lock_path = property(lambda self: self.path / ".launch.lock")
    log_path = property(lambda self: self.path / "train.log")
    eval_log_path = property(lambda self: self.path / "eval.log")
    config_path = property(lambda self: self.path / "config.yaml")
    status_path = property(lambda self: self.path / "status.json")
    heartbeat_path = property(lambda self: self.path / "heartbeat")
    estimate_path = property(lambda self: self.path / "estimate.json")
    provenance_path = property(lambda self: self.path / "provenance.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    rollouts_path = property(lambda self: self.path / "rollouts.jsonl")
    candidates_path = property(lambda self: self.path / "candidates.jsonl")
    pairs_path = property(lambda self: self.path / "pairs.jsonl")
    pairs_summary_path = property(lambda self: self.path / "pairs_summary.json")
    skipped_path = property(lambda self: self.path / "skipped.jsonl")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    stages_dir = property(lambda self: self.path / "stages")
    adapter_dir = property(lambda self: self.path / "adapter")
    model_dir = property(lambda self: self.path / "model")
    stop_path = property(lambda self: self.path / "stop.json")
    eval_dir = property(lambda self: self.path / "eval")
    merged_dir = property(lambda self: self.path / "merged")

    def eval_report_path(self, split: str, baseline: str | None = None) -> Path:
        """Where evaluation writes its report on `split`, against the base or against a finished stage `baseline`.

        >>> run = RunDir("runs/r")
        >>> run.eval_report_path("test").name, run.eval_report_path("test", "warm_start").name
        ('test.json', 'test-vs-warm_start.json')
        """
        return self.eval_dir / (f"{split}-vs-{baseline}.json" if baseline else f"{split}.json")

    def exists(self) -> bool:
        return self.path.is_dir()

    def read_estimate(self) -> dict[str, Any] | None:
        """The launch's memory estimate (and, after the first step on CUDA, the measured peak), if any."""
        try:
            return json.loads(self.estimate_path.read_text())
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------------------------------ status
    def read_status(self) -> dict[str, Any]:
        """The status, with `state` reading `crashed` when an active run's trainer is gone.

        Gone means: its heartbeat (or, before the first beat, its status) is older than the run's
        `heartbeat_timeout_s`, wherever this is read from; or, read from the owner's own PID namespace,
        its process no longer exists. A missing or unreadable file reads as state `missing` rather than
        raising, because the UI polls folders that a user may delete at any moment.
        """
        try:
            status = json.loads(self.status_path.read_text())
        except FileNotFoundError:
            return {"state": "missing"}
        except (OSError, json.JSONDecodeError) as err:
            return {"state": "missing", "error": f"{self.status_path}: unreadable ({err})"}
        if status.get("state") in ACTIVE_STATES:
            age = self.heartbeat_age()
            status["heartbeat_age_s"] = None if age is None else round(age, 1)
            owner = status.get("owner")
            timeout = float(status.get("heartbeat_timeout_s") or HEARTBEAT_TIMEOUT_S)
            stale = age is None or age > timeout
            gone_here = owned_here(owner) and owner.get("pid") and not pid_alive(owner["pid"])
            if stale or gone_here:
                status["recorded_state"] = status["state"]
                status["state"] = CRASHED
        return status

    def heartbeat_age(self) -> float | None:
        """Seconds since the trainer last showed life: its heartbeat, or a status write (the launcher's first)."""
        stamps = [t for t in (_mtime(self.heartbeat_path), _mtime(self.status_path)) if t is not None]
        return max(0.0, time.time() - max(stamps)) if stamps else None

    def beat(self) -> None:
        """Record that the trainer is alive (its background thread calls this every few seconds)."""
        self.heartbeat_path.touch()

    def write_status(self, state: str, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into status.json and set `state`; stamps started/ended times."""
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}; allowed: {', '.join(STATES)}")
        with _status_lock:
            status = self._stored_status()
            previous = status.get("state")
            status.update(fields)
            status["state"] = state
            status["updated"] = now_iso()
            if state == "starting":
                status.setdefault("started", now_iso())
                # This launch's own clock: a resumed run adds its time to the earlier launches' `active_s`,
                # so the time it sat stopped between them is not counted as time it ran.
                # (The launcher writes `starting`, then its trainer does: one launch. A crashed launch ended
                # unrecorded, and its time is not counted.)
                if previous != "starting" or "active_since" not in status:
                    status["active_since"] = time.time()
                status.pop("ended", None)
                status.pop("error", None)
                status.pop("traceback", None)
            if state in ENDED_STATES:
                status["ended"] = now_iso()
                since = status.pop("active_since", None)
                if isinstance(since, (int, float)):
                    status["active_s"] = round(float(status.get("active_s") or 0.0) + max(0.0, time.time() - since), 1)
            write_json_atomic(self.status_path, status)
            return status

    def update_status(self, **fields: Any) -> None:
        """Merge `fields` into an existing status.json without touching the state."""
        with _status_lock:
            status = self._stored_status()
            if not status:
                return
            status.update(fields, updated=now_iso())
            write_json_atomic(self.status_path, status)

    def update_progress(self, step: int, total: int | None) -> None:
        """Record the trainer's step without touching the state (called every step on rank 0)."""
        self.update_status(step=step, total=total)

    def _stored_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    # ------------------------------------------------------------------------------------------ stop requests
    def request_stop(self, by: str | None = None) -> None:
        """Ask the trainer to stop: it saves a checkpoint at the next step boundary (or stops during start-up).

        `by` names who asks (a page), recorded in the request; by default this process's app.
        """
        write_json_atomic(self.stop_path, {"time": time.time(), "by": process_owner(by)})

    def stop_request(self, since: float) -> dict[str, Any] | None:
        """The stop request written at or after `since` (the launch time), or None: an older one belonged to an
        earlier launch."""
        try:
            request = json.loads(self.stop_path.read_text())
            if float(request.get("time", 0)) >= since - 1.0:  # allow for a coarse filesystem clock
                return request
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        return None

    def stop_requested(self, since: float) -> bool:
        """A stop request written at or after `since` (the launch time)."""
        return self.stop_request(since) is not None

    # ------------------------------------------------------------------------------------------ config
    def write_config(self, yaml_text: str) -> None:
        """Write the resolved config. A resumed run keeps its original file: the config is written once."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            tmp = self.config_path.with_suffix(".yaml.tmp")
            tmp.write_text(yaml_text)
            os.replace(tmp, self.config_path)

    def read_config(self) -> dict[str, Any]:
        """The run's resolved config as a mapping; FileNotFoundError when it is gone, ConfigError when unreadable."""
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.config_path}: no config.yaml")
        return read_yaml(self.config_path)

    # ------------------------------------------------------------------------------------------ metrics
    def append_jsonl(self, path: Path, record: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def append_metric(self, record: dict[str, Any]) -> None:
        self.append_jsonl(self.metrics_path, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.metrics_path))

    def read_rollouts(self, last: int | None = None) -> list[dict[str, Any]]:
        rows = list(read_jsonl(self.rollouts_path))
        return rows[-last:] if last else rows

    def record_skip(self, record: dict[str, Any]) -> None:
        """Append one training sample left out to `skipped.jsonl`. DataLoader workers call this too: one short
        write per line, so their appends do not interleave."""
        self.skipped_path.parent.mkdir(parents=True, exist_ok=True)
        with self.skipped_path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")

    def read_skips(self, stage: str | None = None) -> list[dict[str, Any]]:
        """The `skipped.jsonl` records of one stage (None: a run of one stage); none when there is no file yet."""
        return [record for record in read_jsonl(self.skipped_path) if record.get("stage") == stage]

    def forget_after(self, step: int, stage: str | None = None) -> int:
        """Drop metric and rollout lines logged after `step` (of `stage`): a resume from that step logs them again.

        Returns how many lines were dropped. The files are rewritten atomically.
        """
        dropped = 0
        for path in (self.metrics_path, self.rollouts_path):
            rows = list(read_jsonl(path))
            kept = [r for r in rows if not (r.get("stage") == stage and (r.get("step") or 0) > step)]
            if len(kept) == len(rows):
                continue
            dropped += len(rows) - len(kept)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in kept))
            os.replace(tmp, path)
        return dropped

    # ------------------------------------------------------------------------------------------ artifacts
    def stage_checkpoints_dir(self, stage: str | None) -> Path:
        """Where a stage's Trainer checkpoints: `checkpoints/<stage>/`, or `checkpoints/` for a run of one unnamed stage."""
        return self.checkpoints_dir / stage if stage else self.checkpoints_dir

    def checkpoint_roots(self) -> list[Path]:
        """Every folder that holds `checkpoint-N` folders: `checkpoints/` and, in a curriculum, `checkpoints/<stage>/`."""
        if not self.checkpoints_dir.is_dir():
            return []
        stages = (p for p in self.checkpoints_dir.iterdir()
                  if p.is_dir() and checkpoint_step(p) is None and not p.name.startswith(SET_ASIDE_PREFIX))
        return [self.checkpoints_dir, *sorted(stages)]

    def final_artifact(self) -> Path | None:
        """`adapter/` for LoRA runs, `model/` for full fine-tuning, or None before the run finishes."""
        for candidate in (self.adapter_dir, self.model_dir):
            if holds_weights(candidate):
                return candidate
        return None

    def artifact_dir(self, stage: str | None, full: bool) -> Path:
        """Where trained weights go: `stages/<stage>/` for a stage of several, else the run folder itself; then
        `model/` for full fine-tuning, `adapter/` otherwise."""
        folder = RunDir(self.stages_dir / stage) if stage else self  # a stage's weights are laid out as a run's
        return folder.model_dir if full else folder.adapter_dir

    def finished_stages(self) -> list[str]:
        """The stages whose weights are saved (`stages/<name>/adapter|model`), by name."""
        if not self.stages_dir.is_dir():
            return []
        return sorted(p.name for p in self.stages_dir.iterdir() if self.stage_artifact(p.name))

    def stage_artifact(self, name: str) -> Path | None:
        """A finished stage's saved weights (`stages/<name>/adapter` or `/model`), or None."""
        for full in (False, True):
            path = self.artifact_dir(name, full)
            if holds_weights(path):
                return path
        return None

    def newest_weights(self) -> Path | None:
        """The weights to evaluate or compare: the final adapter/model, else whichever was saved last of the
        finished stages (`stages/<name>/adapter|model`) and the newest complete checkpoint of each folder
        (`checkpoints/[<stage>/]checkpoint-N`); None when nothing has been saved yet."""
        final = self.final_artifact()
        if final:
            return final
        # A finished stage against a later stage's checkpoints (a run stopped in GRPO after its warm start):
        # whichever was saved last. Within a folder the step decides, not the mtime: deleting files inside an
        # old checkpoint (rotation) makes it look new.
        saved = {p: p.stat().st_mtime for p in map(self.stage_artifact, self.finished_stages()) if p}
        for folder in self.checkpoint_roots():
            if ckpts := complete_checkpoints(folder):
                saved[ckpts[-1]] = (ckpts[-1] / CHECKSUMS).stat().st_mtime
        return max(saved, key=saved.get) if saved else None

    def eval_reports(self) -> dict[str, dict[str, Any]]:
        reports = {}
        if self.eval_dir.is_dir():
            for path in sorted(self.eval_dir.glob("*.json")):
                try:
                    reports[path.stem] = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
        return reports


def list_runs(root: str | Path | None = None) -> list[RunDir]:
    """Every run folder under `root` (newest first), whether it was started from the UI or the CLI."""
    root = Path(root) if root else runs_root()
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and RunDir(p).status_path.exists()]
    return sorted(runs, key=lambda r: _mtime(r.status_path) or 0, reverse=True)


def holds_adapter(folder: Path) -> bool:
    """A saved PEFT adapter (adapter_config.json) is in `folder`."""
    return (Path(folder) / "adapter_config.json").exists()


def holds_weights(folder: Path) -> bool:
    """A saved adapter (adapter_config.json) or full model (config.json) is in `folder`."""
    return holds_adapter(folder) or (Path(folder) / "config.json").exists()


class RunError(RuntimeError):
    """A run folder that cannot be used for what was asked. Nothing in it has been changed."""


def error_line(err: BaseException) -> str:
    """An error's own message, also when a DataLoader worker raised it: torch raises it again in the trainer as
    "Caught X in DataLoader worker process 0." followed by the worker's whole traceback, whose last line is the
    message the product wrote.

    >>> error_line(RunError("Caught RunError in DataLoader worker process 0.\\nOriginal Traceback ...:\\n  x\\n"
    ...                     "core.runs.RunError: no clip of the batch could be used"))
    'no clip of the batch could be used'
    >>> error_line(ValueError("plain"))
    'plain'

    A machine of a multi-machine job that died shows as gloo's or NCCL's socket error on the others:
    >>> error_line(RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.0.0.2]:29500"))
    'lost the machine at [10.0.0.2]:29500 (its process ended or its network went away); launch every machine again to resume from the last checkpoint'
    """
    text = str(err)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    peer = LOST_PEER.search(text)
    if peer:
        return (f"lost the machine at {peer.group(1)} (its process ended or its network went away); launch every "
                "machine again to resume from the last checkpoint")
    return text


# How gloo (and NCCL's socket transport) report a peer whose process or connection is gone.
LOST_PEER = re.compile(r"(?:Connection closed by peer|Connection reset by peer|Read error|Socket Timeout)[^\[]{0,40}(\[[^\]]+\]:\d+)")


def dict_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts.

    >>> dict_differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 0})
    ['a.c', 'd']
    """
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in dict_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def unique_run_dir(prefix: str, root: Path | None = None) -> RunDir:
    """A run folder under the runs root that does not exist yet (nothing is created)."""
    root = root or runs_root()
    path = root / new_run_id(prefix)
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{new_run_id(prefix)}-{suffix}"
    return RunDir(path)


def resolve_run_dir(run_dir: str | Path | None, prefix: str) -> RunDir:
    """The folder a training launch will use, before anything is written: `--run-dir`, else a new one."""
    if run_dir is None:
        if world_size() > 1:
            raise RunError("training with several processes needs --run-dir, so that every rank writes to the same run")
        return unique_run_dir(prefix)
    return RunDir(run_dir)


def is_own_pending_launch(status: dict[str, Any]) -> bool:
    """The `starting` status that this process's launcher wrote for it (see core.launch.launch_training)."""
    launch_id = os.environ.get(LAUNCH_ID_ENV)
    return bool(launch_id) and status.get("launch_id") == launch_id and status.get("state") == "starting"


def open_run_for_training(run_dir: str | Path | RunDir | None, prefix: str, config: dict[str, Any], config_yaml: str) -> RunDir:
    """The run folder to train in: a new one, or an existing one to resume.

    Refuses (RunError, folder untouched) a finished run, a run that is still training, and a resume whose
    config differs from the one the run was started with. Under several processes every rank must be
    given the same folder, and only rank 0 checks and writes it. The caller holds the GPU lock, so a
    refused launch has written nothing.
    """
    run = run_dir if isinstance(run_dir, RunDir) else resolve_run_dir(run_dir, prefix)
    if world_size() > 1 and not is_main_process():
        return run
    status = run.read_status()
    state = status.get("state")
    if state == "finished":
        raise RunError(
            f"{run.path} already holds a finished run (its result is in {run.final_artifact() or run.adapter_dir}); "
            "choose another --run-dir to train again. Nothing was changed."
        )
    if state in ACTIVE_STATES and not is_own_pending_launch(status):
        owner = status.get("owner") or {}
        raise RunError(f"{run.path} is already {state} ({owner.get('app', 'unknown owner')}); stop it first. Nothing was changed.")
    if run.config_path.exists():
        saved = absolute_data_paths(run.read_config())  # a run recorded before data folders were made absolute
        changed = dict_differences(saved, config)
        if changed:
            raise RunError(
                f"{run.path} was started with a different config (differs in: {', '.join(changed)}). "
                "Resume with its own config.yaml, or choose another --run-dir. Nothing was changed."
            )
    run.write_config(config_yaml)
    return run


# ---------------------------------------------------------------------------------------------- stopping


def ask_to_stop(run: RunDir, status: dict[str, Any], by: str | None = None) -> None:
    """Write the stop request (saying who asks: `by`, else this process's app); SIGTERM the trainer too when it
    runs in this namespace (a shortcut only)."""
    run.request_stop(by)
    owner = status.get("owner") or {}
    if owned_here(owner) and pid_alive(owner.get("pid")):
        try:
            os.kill(owner["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass


def stop_run(run: RunDir, wait_s: float = 0.0, poll_s: float = 0.5, by: str | None = None) -> tuple[int, str]:
    """Ask a run to stop, from any container: a stop request in its folder, plus SIGTERM when its owner is here.

    `by` names who asks (a page passes its name); the trainer records it as the stop's reason.
    Returns (exit code, message): 0 when the run stops or had already ended (or crashed: nothing to stop),
    2 when there is no such run, 1 when `wait_s` passed before the trainer reported an end.
    """
    status = run.read_status()
    state = status.get("state")
    if state == "missing":
        if not run.exists():
            return 2, f"no such run: {run.path}"
        return 2, f"{run.path} is not a run folder (no status.json)"
    if state in ENDED_STATES:
        return 0, f"Nothing to stop: run {run.id} is already {state}."
    if state == CRASHED:
        return 0, (
            f"Nothing to stop: run {run.id} crashed (no heartbeat for {status.get('heartbeat_age_s')} s, its trainer is gone). "
            "Resume continues from its latest checkpoint."
        )
    ask_to_stop(run, status, by)
    if not wait_s:
        return 0, f"Stopping run {run.id}: it saves a checkpoint at the next step boundary."
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        status = run.read_status()
        if status.get("state") not in ACTIVE_STATES:
            return 0, f"Run {run.id} is {status.get('state')} at step {status.get('step')}."
        time.sleep(poll_s)
    return 1, f"Run {run.id} is still {status.get('state')} after {wait_s:.0f} s; its stop request stays in place."


def active_runs_owned_here(root: Path | None = None) -> list[RunDir]:
    """Runs under `root` that are active and owned by this PID namespace (this container)."""
    found = []
    for run in list_runs(root):
        status = run.read_status()
        if status.get("state") in ACTIVE_STATES and owned_here(status.get("owner")):
            found.append(run)
    return found


def stop_runs_here(wait_s: float, root: Path | None = None, log=print) -> int:
    """Stop every active run this container owns and wait for them to end (a container about to stop)."""
    runs = active_runs_owned_here(root)
    for run in runs:
        ask_to_stop(run, run.read_status())
        log(f"stop requested: {run.id}")
    deadline = time.monotonic() + wait_s
    pending = list(runs)
    while pending and time.monotonic() < deadline:
        time.sleep(0.5)
        pending = [run for run in pending if run.read_status().get("state") in ACTIVE_STATES]
    for run in runs:
        status = run.read_status()
        log(f"{run.id}: {status.get('state')} at step {status.get('step')}")
    return 1 if pending else 0


# ---------------------------------------------------------------------------------------------- command line


def status_summary(run: RunDir) -> dict[str, Any]:
    """The status fields a script needs, plus liveness, as one flat object."""
    status = run.read_status()
    owner = status.get("owner") or {}
    return {
        "run": run.id,
        "path": str(run.path),
        "state": status.get("state"),
        "step": status.get("step"),
        "total": status.get("total"),
        "stage": status.get("stage"),
        "heartbeat_age_s": status.get("heartbeat_age_s"),
        "heartbeat_timeout_s": status.get("heartbeat_timeout_s"),
        "owner": owner.get("app"),
        "owned_here": owned_here(owner),
        "started": status.get("started"),
        "ended": status.get("ended"),
        "error": status.get("error"),
        # Only a request made since this launch: a resumed run still has the stop.json that ended its last one.
        "stop_requested": status.get("state") in ACTIVE_STATES and run.stop_requested(float(status.get("launched") or 0)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.runs", description="Inspect and stop runs from any container.")
    sub = parser.add_subparsers(dest="command", required=True)
    status_cmd = sub.add_parser("status", help="print one JSON object for a run")
    status_cmd.add_argument("run_dir")
    stop_cmd = sub.add_parser("stop", help="ask a run (or every run this container owns) to stop")
    stop_cmd.add_argument("run_dir", nargs="?")
    stop_cmd.add_argument("--wait", type=float, default=0.0, help="wait up to this many seconds for the run to end")
    stop_cmd.add_argument("--all-here", action="store_true", help="every active run owned by this container")
    sub.add_parser("list", help="a table of the runs under VLM_RUNS_DIR")
    args = parser.parse_args(argv)

    if args.command == "status":
        run = RunDir(args.run_dir)
        if not run.exists():
            print(f"error: no such run: {run.path}", file=sys.stderr)
            return 2
        print(json.dumps(status_summary(run)))
        return 0
    if args.command == "stop":
        if args.all_here:
            return stop_runs_here(args.wait)
        if not args.run_dir:
            parser.error("stop needs RUN_DIR or --all-here")
        code, message = stop_run(RunDir(args.run_dir), wait_s=args.wait)
        print(message, file=sys.stderr if code == 2 else sys.stdout)
        return code
    rows = [status_summary(run) for run in list_runs()]
    if not rows:
        print(f"no runs under {runs_root().resolve()}")
        return 0
    print(f"{'run':<32} {'state':<9} {'step':>11} {'beat':>6}  owner")
    for row in rows:
        step = f"{row['step'] or 0}/{row['total']}" if row["total"] else str(row["step"] or "")
        beat = "" if row["heartbeat_age_s"] is None else f"{row['heartbeat_age_s']:.0f}s"
        print(f"{row['run']:<32} {row['state']:<9} {step:>11} {beat:>6}  {row['owner'] or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
