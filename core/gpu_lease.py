"""One GPU lease for everything that holds GPU memory, and launching the CLIs that take it.

The lease is an flock() on `<runs root>/.gpu.lock`, in the runs volume that both containers share. flock()
belongs to the open file, not to a pid: it works between PID namespaces, and the kernel drops it when the
holder dies (even by kill -9), so a crashed trainer never leaves the GPU "busy".

Holders are of three kinds: `training`, `evaluation` and `compare` (a model the UI keeps loaded for side
by side answers). A compare holder yields: whoever wants the GPU writes a release request next to the
lock, the holder's watcher drops its model and the lock, and the asker takes it.

A launcher (the UI's Start, Resume and Evaluate) takes the lease itself, before it writes anything into the
run, and hands the locked file to the child it starts; so a second launch hears "GPU busy" at once, and a launch
that loses the race leaves no folder behind. Two launches of one run (two tabs pressing Resume) are kept apart
by the run's own launch lock, taken before anything else: the lease alone cannot, since one process may take it
again for the same run.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from core.processes import LAUNCHED_BY_ENV, page_name, process_owner
from core.runs import ACTIVE_STATES, LAUNCH_ID_ENV, LAUNCH_TIME_ENV, RunDir, RunError, now_iso, runs_root

LOCK_NAME = ".gpu.lock"
RELEASE_NAME = ".gpu.release"
LOCK_FD_ENV = "VLM_GPU_LOCK_FD"  # a launcher passes its locked file to the child under this name
RELEASE_WAIT_S = 30.0  # how long a launch waits for a compare model to let go of the GPU
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


def _write_record(fd: int, record: dict) -> None:
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

    A compare holder is asked to release and given `wait_release_s` to do so. With `on_release_request`
    (compare holders), a watcher thread calls it when someone else asks for the GPU. `app` names the holder
    when it is not this process's app (a page's launcher, holding the lease for the job it starts).
    """
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"run_id": run_id, "kind": kind, **process_owner(app), "since": now_iso()}
    with _held_guard:
        held = _held.get(path.resolve())
        if held is not None:
            current = read_lock_record(path)
            if current.get("run_id") == run_id or current.get("kind") == "compare" == kind:
                _write_record(held["fd"], record)
                held.update(record=record, on_release=on_release_request)
                return path
            raise GpuBusy(busy_message(current))
        fd = _adopt_inherited(path)
        if fd is None:
            fd = _lock_or_wait(path, wait_release_s)
        _write_record(fd, record)
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
            if holder.get("kind") != "compare" or wait_release_s <= 0:
                os.close(fd)
                raise GpuBusy(busy_message(holder)) from None
            if deadline is None:
                from core.files import write_json_atomic

                write_json_atomic(release_request_path(path.parent), {"time": time.time(), "by": process_owner()})
                deadline = time.monotonic() + wait_release_s
            elif time.monotonic() > deadline:
                os.close(fd)
                raise GpuBusy(
                    f"{busy_message(holder)} and did not release it within {wait_release_s:.0f} s; "
                    "close the compare view there (or reload that page), then try again"
                ) from None
            time.sleep(0.2)


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


# ---------------------------------------------------------------------------------------------- launching


def start_holding_lock(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `command` in its own session with the GPU lock this process holds handed to it.

    Closing the browser tab must not stop the job, hence the session. The caller took the lock; it is
    handed over when the child starts, and released when starting fails.
    """
    try:
        fd = held_fd()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}), **{LOCK_FD_ENV: str(fd)}),
                pass_fds=(fd,),
            )
    except BaseException:
        release_gpu_lock()
        raise
    hand_over_gpu_lock()
    return process


def launcher_name(command: list[str]) -> str | None:
    """The page that launches `command` (`python -m <module> ...`), or None for another command.

    >>> launcher_name(["python", "-m", "video_vlm.evaluate", "--run", "runs/r"])
    'Video VLM page'
    """
    return page_name(command[command.index("-m") + 1]) if "-m" in command[:-1] else None


def launch_cli(
    command: list[str], run: RunDir, log_name: str, kind: str, launched_by: str | None = None
) -> subprocess.Popen:
    """Take the GPU for `run` and start `command` with the lock handed to it (the UI's Evaluate).

    `launched_by` names the page that asks (default: the recipe's page, from the module the command runs); the
    job and its GPU lock record it. Raises GpuBusy before anything is started or written when another job holds
    the GPU.
    """
    launched_by = launched_by or launcher_name(command)
    acquire_gpu_lock(run.id, kind=kind, app=launched_by)
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except BaseException:
        release_gpu_lock()
        raise
    return start_holding_lock(command, run.path / log_name, {LAUNCHED_BY_ENV: launched_by} if launched_by else None)


@contextmanager
def launch_claim(run: RunDir) -> Iterator[bool]:
    """Hold `run`'s launch lock for one launch; yields whether this launch created the run folder.

    The lock is the run folder's `.launch.lock`, taken without waiting: from the check of the run's state to the
    trainer's `starting`, no second launcher of the same run (another tab's Resume, another thread or process)
    gets in. It is an flock(), so a launcher that dies lets go of it.

    Raises:
        RunError: Another launch of this run holds the lock; nothing was changed.
    """
    from filelock import FileLock, Timeout

    try:
        run.path.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    claim = FileLock(run.launch_lock_path, timeout=0)
    try:
        claim.acquire()
    except Timeout:
        raise RunError(f"Run {run.id} is already being started by another Start or Resume.") from None
    try:
        yield created
    finally:
        claim.release()


def launch_training(
    module: str,
    run: RunDir,
    config_path: str | Path | None = None,
    config_text: str | None = None,
    overrides: list[str] = (),
    launched_by: str | None = None,
) -> subprocess.Popen:
    """Start (or resume) a training run of `python -m <module>` and return once its folder says `starting`.

    One launch of a run at a time (`launch_claim`), and none while the run is active, so a second click, in this
    tab or another, never starts a second trainer; then the GPU, so a refused launch leaves nothing behind. A new
    run (`config_text`) gets its folder and `launch.yaml` here; a resume (`config_path`) uses the folder's. The
    run records `launched_by` (default: the recipe's page, from `module`) as its owner's app.

    Raises:
        GpuBusy: another job holds the GPU; nothing was created or changed.
        RunError: the run is already starting, running or being launched, or a new run's folder holds a run;
            nothing was changed.
    """
    launched_by = launched_by or page_name(module)
    with launch_claim(run) as created:
        status = run.read_status()
        if status.get("state") in ACTIVE_STATES:
            raise RunError(f"Run {run.id} is already {status['state']}.")
        if config_text is not None and status.get("state") != "missing":
            raise RunError(f"Run {run.id} already exists ({status.get('state')}); a new run needs a new folder.")
        try:
            acquire_gpu_lock(run.id, kind="training", app=launched_by)
        except BaseException:
            if created:
                shutil.rmtree(run.path, ignore_errors=True)
            raise
        return _start_trainer(module, run, created, config_path, config_text, overrides, launched_by)


def _start_trainer(
    module: str,
    run: RunDir,
    created: bool,
    config_path: str | Path | None,
    config_text: str | None,
    overrides: list[str],
    launched_by: str,
) -> subprocess.Popen:
    """The part of `launch_training` after the claim and the lease: `starting`, then the child."""
    claimed = False  # whether this launch wrote `starting`: only then is a failure this launch's to record
    try:
        if config_text is not None:
            config_path = run.path / "launch.yaml"
            Path(config_path).write_text(config_text)
        launch_id, launched = uuid.uuid4().hex, time.time()
        # The child records its own pid; ours must never be signalled.
        owner = {**process_owner(launched_by), "pid": None}
        run.write_status("starting", launch_id=launch_id, launched=launched, owner=owner, pid=None, pgid=None)
        claimed = True
        command = [sys.executable, "-m", module, "--config", str(config_path), "--run-dir", str(run.path), *overrides]
        env = {LAUNCH_ID_ENV: launch_id, LAUNCH_TIME_ENV: repr(launched), LAUNCHED_BY_ENV: launched_by}
        return start_holding_lock(command, run.log_path, env)
    except BaseException as err:
        release_gpu_lock()  # a no-op once the child holds it
        if created:
            shutil.rmtree(run.path, ignore_errors=True)
        elif claimed:
            run.write_status("failed", error=f"could not start the trainer: {err}")
        raise
