"""The run folder: the one contract between the CLI that writes a run and the UI, evaluation and export that read it.

    runs/<run-id>/
        config.yaml      resolved config, written once at launch
        status.json      state, pid, step, total, started/ended, error (written atomically)
        metrics.jsonl    one JSON object per log event (train + eval)
        rollouts.jsonl   sampled completions with their rewards (GRPO)
        train.log        stdout/stderr of the job
        checkpoints/     Trainer checkpoints (adapter + optimizer state)
        adapter/ | model/  final artifact (PEFT adapter or full model)
        eval/*.json      evaluation reports (base and tuned)
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

STATES = ("starting", "running", "stopping", "stopped", "finished", "failed")
ACTIVE_STATES = ("starting", "running", "stopping")
CRASHED = "crashed"  # derived on read: an active state whose process is gone


def is_main_process() -> bool:
    """Rank 0 owns the run folder; other ranks of a distributed job only train."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def runs_root() -> Path:
    """Where run folders live: `VLM_RUNS_DIR`, else `runs/` under the working directory."""
    return Path(os.environ.get("VLM_RUNS_DIR", "runs"))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def pid_alive(pid: int | None) -> bool:
    """True when a process with this pid exists (and is not a zombie we already reaped)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc tells the truth on Linux.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().split(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return True
    return True


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file in the same folder, then rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_run_id(prefix: str) -> str:
    """A sortable, readable id such as `image-20261121-203655`."""
    return f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def slugify(text: str) -> str:
    """
    >>> slugify("My run / v2")
    'my-run-v2'
    """
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"


@dataclass(frozen=True)
class RunDir:
    """One run folder. Writers are the training CLI (rank 0); everyone else only reads."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    # ------------------------------------------------------------------------------------------ paths
    @property
    def id(self) -> str:
        return self.path.name

    config_path = property(lambda self: self.path / "config.yaml")
    status_path = property(lambda self: self.path / "status.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    rollouts_path = property(lambda self: self.path / "rollouts.jsonl")
    log_path = property(lambda self: self.path / "train.log")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    adapter_dir = property(lambda self: self.path / "adapter")
    model_dir = property(lambda self: self.path / "model")
    eval_dir = property(lambda self: self.path / "eval")

    def exists(self) -> bool:
        return self.path.is_dir()

    # ------------------------------------------------------------------------------------------ status
    def read_status(self) -> dict[str, Any]:
        """The status, with `state` reading `crashed` when an active run's process is gone.

        A missing or unreadable file reads as state `missing` rather than raising, because the UI polls
        folders that a user may delete at any moment.
        """
        try:
            status = json.loads(self.status_path.read_text())
        except FileNotFoundError:
            return {"state": "missing"}
        except (OSError, json.JSONDecodeError) as err:
            return {"state": "missing", "error": f"{self.status_path}: unreadable ({err})"}
        if status.get("state") in ACTIVE_STATES and not pid_alive(status.get("pid")):
            status["recorded_state"] = status["state"]
            status["state"] = CRASHED
        return status

    def write_status(self, state: str, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into status.json and set `state`; stamps started/ended times."""
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}; allowed: {', '.join(STATES)}")
        try:
            status = json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            status = {}
        status.update(fields)
        status["state"] = state
        status["updated"] = now_iso()
        if state == "starting":
            status.setdefault("started", now_iso())
            status.pop("ended", None)
            status.pop("error", None)
        if state in ("stopped", "finished", "failed"):
            status["ended"] = now_iso()
        write_json_atomic(self.status_path, status)
        return status

    def update_progress(self, step: int, total: int | None) -> None:
        """Record the trainer's step without touching the state (called every step on rank 0)."""
        try:
            status = json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return
        status.update(step=step, total=total, updated=now_iso())
        write_json_atomic(self.status_path, status)

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
        from core.config import read_yaml

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

    # ------------------------------------------------------------------------------------------ artifacts
    def checkpoints(self) -> list[Path]:
        """Checkpoint folders sorted by step (oldest first); half-written ones are skipped."""
        return complete_checkpoints(self.checkpoints_dir)

    def latest_checkpoint(self) -> Path | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def final_artifact(self) -> Path | None:
        """`adapter/` for LoRA runs, `model/` for full fine-tuning, or None before the run finishes."""
        for candidate in (self.adapter_dir, self.model_dir):
            if holds_weights(candidate):
                return candidate
        return None

    def newest_weights(self) -> Path | None:
        """The weights to evaluate or compare: the final adapter/model, else the newest finished curriculum
        stage (`stages/<name>/adapter|model`), else the newest complete checkpoint
        (`checkpoints/[<stage>/]checkpoint-N`); None when nothing has been saved yet."""
        final = self.final_artifact()
        if final:
            return final
        candidates = [p for p in self.path.glob("stages/*/*") if holds_weights(p)]
        if not candidates and self.checkpoints_dir.is_dir():
            folders = [self.checkpoints_dir, *(p for p in self.checkpoints_dir.iterdir() if p.is_dir())]
            candidates = [ckpt for folder in folders for ckpt in complete_checkpoints(folder)]
        return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None

    def eval_reports(self) -> dict[str, dict[str, Any]]:
        reports = {}
        if self.eval_dir.is_dir():
            for path in sorted(self.eval_dir.glob("*.json")):
                try:
                    reports[path.stem] = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
        return reports


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield JSON objects line by line, skipping a torn last line that a live writer has not finished."""
    try:
        with path.open() as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        return


def list_runs(root: str | Path | None = None) -> list[RunDir]:
    """Every run folder under `root` (newest first), whether it was started from the UI or the CLI."""
    root = Path(root) if root else runs_root()
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and (p / "status.json").exists()]
    return sorted(runs, key=lambda r: r.status_path.stat().st_mtime if r.status_path.exists() else 0, reverse=True)


def complete_checkpoints(folder: Path) -> list[Path]:
    """The `checkpoint-N` folders in `folder` that have their trainer_state.json, by step (oldest first)."""
    found = []
    if folder.is_dir():
        for child in folder.iterdir():
            match = re.fullmatch(r"checkpoint-(\d+)", child.name)
            if match and (child / "trainer_state.json").exists():
                found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def holds_weights(folder: Path) -> bool:
    """A saved adapter (adapter_config.json) or full model (config.json) is in `folder`."""
    return (folder / "config.json").exists() or (folder / "adapter_config.json").exists()


class RunError(RuntimeError):
    """A run folder that cannot be used for what was asked. Nothing in it has been changed."""


def dict_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts.

    >>> dict_differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 0})
    ['a.c', 'd']
    """
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in dict_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def open_run_for_training(run_dir: str | Path | None, prefix: str, config: dict[str, Any], config_yaml: str) -> RunDir:
    """The run folder to train in: a new one, or an existing one to resume.

    Refuses (RunError, folder untouched) a finished run, a run that is still training, and a resume whose
    config differs from the one the run was started with. Under several processes every rank must be
    given the same folder, and only rank 0 checks and writes it.
    """
    if world_size() > 1:
        if run_dir is None:
            raise RunError("training with several processes needs --run-dir, so that every rank writes to the same run")
        if not is_main_process():
            return RunDir(run_dir)
    if run_dir is None:
        path = runs_root() / new_run_id(prefix)
        suffix = 1
        while path.exists():
            suffix += 1
            path = runs_root() / f"{new_run_id(prefix)}-{suffix}"
        run = RunDir(path)
    else:
        run = RunDir(run_dir)
    status = run.read_status()
    state = status.get("state")
    if state == "finished":
        raise RunError(
            f"{run.path} already holds a finished run (its result is in {run.final_artifact() or run.adapter_dir}); "
            "choose another --run-dir to train again. Nothing was changed."
        )
    if state in ACTIVE_STATES:
        raise RunError(f"{run.path} is already {state} (pid {status.get('pid')}); stop it first. Nothing was changed.")
    if run.config_path.exists():
        import yaml

        saved = yaml.safe_load(run.config_path.read_text()) or {}
        changed = dict_differences(saved, config)
        if changed:
            raise RunError(
                f"{run.path} was started with a different config (differs in: {', '.join(changed)}). "
                "Resume with its own config.yaml, or choose another --run-dir. Nothing was changed."
            )
    run.write_config(config_yaml)
    return run
