"""The command-line entries both recipes share (`train.py`, `evaluate.py`): config, GPU lock, run folder,
lifecycle, exit codes.

Exit codes: 0 when the job ends `finished` or `stopped`; 2 for a problem the user can fix (a bad config
value, a run folder that cannot be used, a GPU held by another job, a full disk or read-only folder),
with one line saying what and where.

The order of a launch matters and is kept here, in one place: signal handlers first (a SIGTERM during
start-up stops, never kills), then the config, then the GPU lock, and only then anything written to the
run folder. None of it imports torch, so a second launch hears "GPU busy" within a second; the recipe's
`train()` imports the model libraries once it holds the GPU.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from pydantic import BaseModel

from core.checkpoints import NoUsableCheckpoint, choose_resume_checkpoint
from core.config import ConfigError, load_config, to_yaml
from core.control import RunControl, record_state, run_lifecycle, storage_problem
from core.hub import check_model_available
from core.jobs import GpuBusy, acquire_gpu_lock, release_gpu_lock
from core.runs import RunDir, RunError, is_main_process, is_own_pending_launch, open_run_for_training, resolve_run_dir


def parse_training_args(argv, description: str, default_config: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=default_config, help=f"YAML config (default: {default_config})")
    parser.add_argument("--run-dir", default=None, help="Run folder to create or resume (default: runs/<recipe>-<time>)")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="Train from step 0 when the run's checkpoints exist but none is usable (they are set aside, never deleted)",
    )
    parser.usage = f"{parser.format_usage().removeprefix('usage: ').strip()} [key=value ...]"
    parser.epilog = "key=value overrides (e.g. train.max_steps=10) may come anywhere among the options."
    # Overrides are whatever the options leave over, in their order. Not an argparse positional: with
    # nargs="*", parse_intermixed_args rejects overrides placed before an option on some Python versions.
    args, rest = parser.parse_known_args(argv)
    stray = [item for item in rest if item.startswith("-") or "=" not in item]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)} (overrides are key=value)")
    args.overrides = rest
    return args


def refuse(message: str, run: RunDir | None = None) -> int:
    """Print one line and exit 2; a folder that the UI's launcher made for this launch records why."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    if run is not None and is_own_pending_launch(run.read_status()):
        record_state(run, "failed", error=message)
    return 2


def prepare_resume(run: RunDir, restart: bool) -> None:
    """Check each checkpoint folder before the recipe resumes: a corrupt newest checkpoint is set aside, so the
    recipe's own lookup finds the previous one; none usable refuses a silent restart from step 0."""
    if not is_main_process():
        return
    for folder in run.checkpoint_roots():
        choose_resume_checkpoint(folder, restart=restart, log=lambda line: print(line, flush=True))


def run_training_main(
    argv,
    *,
    config_cls: type[BaseModel],
    prefix: str,
    default_config: str,
    description: str,
    train: Callable[[BaseModel, RunDir, RunControl], None],
) -> int:
    """Load the config, take the GPU, open (or resume) the run folder, and call `train(cfg, run, control)`.

    `argv=None` means a command-line process: the signal handlers then stay until exit, so a second SIGTERM
    during the final save still ends `stopped` with exit 0.
    """
    args = parse_training_args(argv, description, default_config)
    control = RunControl(keep_handlers=argv is None)
    try:
        return train_with_control(args, control, config_cls, prefix, train)
    finally:
        control.close()


def train_with_control(args, control: RunControl, config_cls, prefix: str, train) -> int:
    named = RunDir(args.run_dir) if args.run_dir else None
    try:
        cfg = load_config(config_cls, args.config, args.overrides)
        run = resolve_run_dir(args.run_dir, prefix)
    except (ConfigError, RunError) as err:
        return refuse(str(err), named)
    try:
        if is_main_process():
            acquire_gpu_lock(run.id, kind="training")
        # After the lock, so a busy GPU is still reported at once; seconds, not minutes of retries offline.
        check_model_available(cfg.model.name, cfg.model.revision)
        run = open_run_for_training(run, prefix, cfg.model_dump(mode="json"), to_yaml(cfg))
    except (ConfigError, GpuBusy, RunError) as err:
        release_gpu_lock()
        return refuse(str(err), named)
    except OSError as err:
        release_gpu_lock()
        return refuse(storage_problem(err, run.path) or f"{run.path}: {err}", named)
    print(f"run folder: {run.path}", flush=True)
    try:
        with run_lifecycle(run, control, cfg.logging.heartbeat_timeout_s):
            if not control.poll():
                prepare_resume(run, args.restart)
            if not control.poll():
                train(cfg, run, control)
    except (ConfigError, GpuBusy, RunError, NoUsableCheckpoint) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        problem = storage_problem(err, run.path)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return 2
    finally:
        release_gpu_lock()
    print(f"state: {run.read_status()['state']}", flush=True)
    return 0


def run_evaluation_main(
    run_path: str, evaluate: Callable[[RunDir], dict], summarise: Callable[[RunDir, dict], None]
) -> int:
    """Check that `run_path` is a run folder, take the GPU, call `evaluate(run)`, then `summarise(run, report)`.

    A folder without `config.yaml`, a GPU held by another job, a bad config value or unusable data exits 2
    with one line saying why.
    """
    run = RunDir(run_path)
    if not run.config_path.exists():
        print(f"error: {run.path} is not a run folder (no config.yaml)", file=sys.stderr)
        return 2
    try:
        acquire_gpu_lock(run.id, kind="evaluation")
        report = evaluate(run)
    except GpuBusy as err:
        print(f"error: {err}; evaluate when it is done", file=sys.stderr)
        return 2
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        release_gpu_lock()
    summarise(run, report)
    return 0
