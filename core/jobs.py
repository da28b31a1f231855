"""Training jobs: one GPU lock shared through the runs volume, launching the CLI, and stopping it safely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from core.runs import RunDir, now_iso, pid_alive, runs_root

LOCK_NAME = ".gpu.lock"


class GpuBusy(RuntimeError):
    """Another run holds the GPU. The message names it."""


def lock_path(root: str | Path | None = None) -> Path:
    return Path(root or runs_root()) / LOCK_NAME


def gpu_lock_holder(root: str | Path | None = None) -> dict | None:
    """The live holder of the GPU lock (`run_id`, `pid`), or None when the GPU is free or the holder died."""
    path = lock_path(root)
    try:
        holder = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return holder if pid_alive(holder.get("pid")) else None


def acquire_gpu_lock(run_id: str, root: str | Path | None = None, pid: int | None = None) -> Path:
    """Take the one-trainer-per-GPU lock for `run_id`, or raise GpuBusy naming the run that holds it.

    The lock is a file created with O_EXCL in the runs folder, so both containers and the CLI see it.
    A lock left by a dead process is taken over.
    """
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"run_id": run_id, "pid": pid or os.getpid(), "since": now_iso()})
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = gpu_lock_holder(root)
            if holder is not None:
                if holder.get("run_id") == run_id and holder.get("pid") == (pid or os.getpid()):
                    return path
                raise GpuBusy(f"GPU busy: run {holder.get('run_id')} is training (pid {holder.get('pid')})")
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return path
    raise GpuBusy(f"could not take the GPU lock at {path}")


def release_gpu_lock(root: str | Path | None = None, pid: int | None = None) -> None:
    """Drop the lock if this process (or `pid`) holds it."""
    path = lock_path(root)
    try:
        holder = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return
    if holder.get("pid") == (pid or os.getpid()):
        path.unlink(missing_ok=True)


def launch_training(module: str, config_path: str | Path, run: RunDir, overrides: list[str] = ()) -> subprocess.Popen:
    """Start `python -m <module>` for a run in its own process group, logging to the run's train.log.

    Raises GpuBusy before starting anything when another run is training.
    """
    holder = gpu_lock_holder(run.path.parent)
    if holder is not None and holder.get("run_id") != run.id:
        raise GpuBusy(f"GPU busy: run {holder.get('run_id')} is training")
    run.path.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", module, "--config", str(config_path), "--run-dir", str(run.path), *overrides]
    log = run.log_path.open("ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # Closing the browser tab must not stop training: the job lives in its own session.
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def stop_training(run: RunDir) -> str:
    """Ask a run to stop: SIGTERM to its process group. The trainer saves a checkpoint, then exits `stopped`.

    Returns a message for the user; never raises for a run that is not running.
    """
    status = run.read_status()
    state = status.get("state")
    pid = status.get("pid")
    if state not in ("starting", "running", "stopping") or not pid_alive(pid):
        return f"Nothing to stop: run {run.id} is {state}."
    pgid = status.get("pgid")
    try:
        if pgid and pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"Nothing to stop: run {run.id} already exited."
    return f"Stopping run {run.id}: saving a checkpoint…"
