"""Launching a run or an evaluation from a page: the run's launch lock, the GPU lease, then the CLI in its own session.

A launcher (the UI's Start, Resume and Evaluate) takes the lease itself, before it writes anything into the
run, and hands the locked file to the child it starts; so a second launch hears "GPU busy" at once, and a launch
that loses the race leaves no folder behind. Two launches of one run (two tabs pressing Resume) are kept apart
by the run's own launch lock, taken before anything else: the lease alone cannot, since one process may take it
again for the same run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.gpu_lease import LOCK_FD_ENV, acquire_gpu_lock, hand_over_gpu_lock, held_fd, release_gpu_lock
from core.processes import LAUNCHED_BY_ENV, page_name, process_owner
from core.runs import ACTIVE_STATES, LAUNCH_ID_ENV, LAUNCH_TIME_ENV, RunDir, RunError


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
    command: list[str], run: RunDir, log_path: Path, kind: str, launched_by: str | None = None
) -> subprocess.Popen:
    """Take the GPU for `run` and start `command` with the lock handed to it, its output appended to `log_path`
    (the UI's Evaluate: `run.eval_log_path`).

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
    return start_holding_lock(command, log_path, {LAUNCHED_BY_ENV: launched_by} if launched_by else None)


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
            config_path = run.launch_config_path
            config_path.write_text(config_text)
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
