"""One GPU lease for everything that holds GPU memory (`core.launch` starts the CLIs that take it).

The lease is an flock() on `<runs root>/.gpu.lock`, in the runs volume that both containers share. flock()
belongs to the open file, not to a pid: it works between PID namespaces, and the kernel drops it when the
holder dies (even by kill -9), so a crashed trainer never leaves the GPU "busy".

Holders are of three kinds: `training`, `evaluation` and `compare` (a model the UI keeps loaded for side
by side answers). A compare holder yields: whoever wants the GPU writes a release request next to the
lock, the holder's watcher drops its model and the lock, and the asker takes it.

A launcher (`core.launch`) takes the lease itself and hands the locked file to the child it starts
(`LOCK_FD_ENV`, adopted by `acquire_gpu_lock` in the child).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.processes import process_owner
from core.runs import ENDED_STATES, RunDir, now_iso, runs_root

LOCK_NAME = ".gpu.lock"
RELEASE_NAME = ".gpu.release"
LOCK_FD_ENV = "VLM_GPU_LOCK_FD"  # a launcher passes its locked file to the child under this name
RELEASE_WAIT_S = 30.0  # how long a taker waits for a compare model, or an ended run's exiting process, to let go
KIND_VERBS = {"training": "training", "evaluation": "being evaluated", "compare": "loaded in the compare view"}


class GpuBusy(RuntimeError):
    """Another run holds the GPU. The message names it and where it runs."""


def lock_path(root: str | Path | None = None) -> Path:
    """The one lock, at the runs root (VLM_RUNS_DIR, shared by both containers), wherever a run folder is."""
    return Path(root or runs_root()) / LOCK_NAME


def release_request_path(root: str | Path | None = None) -> Path:
    return Path(root or runs_root()) / RELEASE_NAME


# Open descriptors of the locks this process holds, with what they were taken for.
_held: dict[Path, dict] = {}
_held_guard = threading.RLock()


def read_lock_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


def describe_holder(holder: dict) -> str:
    """
    >>> describe_holder({"run_id": "video-1", "kind": "training", "app": "video-vlm"})
    'run video-1 (video-vlm) is training'
    """
    verb = KIND_VERBS.get(holder.get("kind", "training"), "using the GPU")
    where = f" ({holder['app']})" if holder.get("app") else ""
    return f"run {holder.get('run_id', 'unknown')}{where} is {verb}"


def busy_message(holder: dict) -> str:
    return f"GPU busy: {describe_holder(holder)}"


def gpu_lock_holder(root: str | Path | None = None) -> dict | None:
    """Who holds the GPU lock (`run_id`, `kind`, `app`, `pid`, `since`), or None when it is free."""
    path = lock_path(root)
    with _held_guard:
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


def lock_record(run_id: str, kind: str = "training", app: str | None = None) -> dict:
    """What the lock file says about its holder: the run, the kind of holder, who it is (`app`: the page that
    launched it, else this process's app) and since when. `gpu_lock_holder` reads it back."""
    return {"run_id": run_id, "kind": kind, **process_owner(app), "since": now_iso()}


def write_lock_record(fd: int, record: dict) -> None:
    """Replace the record in the lock file open as `fd` (its holder's descriptor)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)  # pwrite: an inherited descriptor's offset is shared


def _adopt_inherited(path: Path) -> int | None:
    """The locked descriptor a launcher handed to this process, when it is one on this very lock file."""
    raw = os.environ.pop(LOCK_FD_ENV, None)
    if not raw:
        return None
    try:
        fd = int(raw)
        if os.path.samestat(os.fstat(fd), os.stat(path)):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # succeeds only if our open file holds it already
            return fd
    except (ValueError, OSError):
        pass
    return None


def acquire_gpu_lock(
    run_id: str,
    root: str | Path | None = None,
    kind: str = "training",
    wait_release_s: float = RELEASE_WAIT_S,
    on_release_request: Callable[[], None] | None = None,
    app: str | None = None,
) -> Path:
    """Take the GPU for `run_id`, or raise GpuBusy naming the holder and where it runs.

    A compare holder is asked to release and given `wait_release_s` to do so; so is a training job whose run folder
    says it ended (it writes its last state, then releases as its process exits). With `on_release_request`
    (compare holders), a watcher thread calls it when someone else asks for the GPU. `app` names the holder
    when it is not this process's app (a page's launcher, holding the lease for the job it starts).
    """
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = lock_record(run_id, kind, app)
    with _held_guard:
        held = _held.get(path.resolve())
        if held is not None:
            current = read_lock_record(path)
            if current.get("run_id") == run_id or current.get("kind") == "compare" == kind:
                write_lock_record(held["fd"], record)
                held.update(record=record, on_release=on_release_request)
                return path
            raise GpuBusy(busy_message(current))
        fd = _adopt_inherited(path)
        if fd is None:
            fd = _lock_or_wait(path, wait_release_s)
        write_lock_record(fd, record)
        _held[path.resolve()] = {"fd": fd, "record": record, "on_release": on_release_request, "since": time.time()}
    if on_release_request is not None:
        threading.Thread(target=_watch_release_requests, args=(path,), daemon=True, name="gpu-release-watch").start()
    return path


def _lock_or_wait(path: Path, wait_release_s: float) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            holder = read_lock_record(path)
            compare, exiting = holder.get("kind") == "compare", holder_has_ended(path.parent, holder)
            if not (compare or exiting) or wait_release_s <= 0:
                os.close(fd)
                raise GpuBusy(busy_message(holder)) from None
            if deadline is None:
                if compare:
                    from core.files import write_json_atomic

                    write_json_atomic(release_request_path(path.parent), {"time": time.time(), "by": process_owner()})
                deadline = time.monotonic() + wait_release_s
            elif time.monotonic() > deadline:
                os.close(fd)
                what = "close the compare view there (or reload that page)" if compare else "its process has not exited"
                raise GpuBusy(
                    f"{busy_message(holder)} and did not release it within {wait_release_s:.0f} s; {what}, then try again"
                ) from None
            time.sleep(0.2)


def holder_has_ended(root: Path, holder: dict) -> bool:
    """Whether the lock's holder is a training job whose run folder (under `root`) says it ended: its process is on
    its way out. Training only: an evaluation holds the lock of a run that ended long before it."""
    folder = root / str(holder.get("run_id") or "")
    if holder.get("kind") != "training" or not holder.get("run_id") or not folder.is_dir():
        return False
    return RunDir(folder).read_status().get("state") in ENDED_STATES


def _watch_release_requests(path: Path, poll_s: float = 0.5) -> None:
    """In a compare holder: when a release request newer than the lease appears, hand the GPU back."""
    request = release_request_path(path.parent)
    while True:
        time.sleep(poll_s)
        with _held_guard:
            held = _held.get(path.resolve())
            if held is None or held["on_release"] is None:
                return
            since, callback = held["since"], held["on_release"]
        try:
            asked = request.stat().st_mtime
        except OSError:
            continue
        if asked >= since:
            callback()  # drops the model, then calls release_gpu_lock
            release_gpu_lock(path.parent, kind="compare")
            return


def release_gpu_lock(root: str | Path | None = None, kind: str | None = None) -> None:
    """Drop the lock if this process holds it (of `kind`, when given)."""
    path = lock_path(root).resolve()
    with _held_guard:
        held = _held.get(path)
        if held is None or (kind is not None and held["record"].get("kind") != kind):
            return
        del _held[path]
        fd = held["fd"]
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def hand_over_gpu_lock(root: str | Path | None = None) -> None:
    """Forget the lock without unlocking it: a child started with the descriptor holds it from now on."""
    with _held_guard:
        held = _held.pop(lock_path(root).resolve(), None)
    if held is not None:
        os.close(held["fd"])


def held_fd(root: str | Path | None = None) -> int:
    with _held_guard:
        return _held[lock_path(root).resolve()]["fd"]
