"""Training jobs: one GPU lock shared through the runs volume, launching the CLI, and stopping it safely."""

from __future__ import annotations

import fcntl
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


# Open descriptors of the locks this process holds. flock() belongs to the open file: closing it (or the
# process dying, even by kill -9) releases the lock, so a crashed trainer never leaves the GPU "busy".
# Unlike a pid check, it also works between containers that share the runs volume but not a pid namespace.
_held: dict[Path, int] = {}


def read_lock_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


def gpu_lock_holder(root: str | Path | None = None) -> dict | None:
    """Who holds the GPU lock (`run_id`, `pid`, `since`), or None when it is free."""
    path = lock_path(root)
    if path.resolve() in _held:
        return read_lock_record(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_lock_record(path) or {"run_id": "unknown"}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def acquire_gpu_lock(run_id: str, root: str | Path | None = None) -> Path:
    """Take the one-trainer-per-GPU lock for `run_id`, or raise GpuBusy naming the run that holds it."""
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.resolve() in _held:
        holder = read_lock_record(path)
        if holder.get("run_id") == run_id:
            return path
        raise GpuBusy(f"GPU busy: run {holder.get('run_id')} is training (pid {holder.get('pid')})")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = read_lock_record(path)
        raise GpuBusy(f"GPU busy: run {holder.get('run_id', 'unknown')} is training (pid {holder.get('pid')})") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"run_id": run_id, "pid": os.getpid(), "since": now_iso()}).encode())
    _held[path.resolve()] = fd
    return path


def release_gpu_lock(root: str | Path | None = None) -> None:
    """Drop the lock if this process holds it."""
    fd = _held.pop(lock_path(root).resolve(), None)
    if fd is not None:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


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
