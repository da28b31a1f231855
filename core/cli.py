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
import importlib
import os
import sys
from collections.abc import Callable

from pydantic import BaseModel

from core.architectures import family_lines
from core.checkpoints import NoUsableCheckpoint, choose_resume_checkpoint
from core.config import ConfigError, absolute_data_paths, load_config, to_yaml
from core.control import RunControl, record_state, run_lifecycle
from core.estimate import (
    DEVICE_TARGETS,
    EstimateError,
    does_not_fit_line,
    format_table,
    summary_line,
)
from core.files import write_json_atomic
from core.gpu_lease import GpuBusy, acquire_gpu_lock, release_gpu_lock
from core.hub import check_model_available
from core.models import gpu_feature_problem
from core.processes import distributed_mode, is_main_process, job_size_problem, start_distributed
from core.provenance import end_provenance, start_provenance
from core.runs import (
    RunDir,
    RunError,
    error_line,
    is_own_pending_launch,
    open_run_for_training,
    resolve_run_dir,
)
from core.storage import storage_problem


def parse_training_args(argv, description: str, default_config: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=default_config, help=f"YAML config (default: {default_config})")
    parser.add_argument("--run-dir", default=None, help="Run folder to create or resume (default: runs/<recipe>-<time>)")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="Train from step 0 when the run's checkpoints exist but none is usable (they are set aside, never deleted)",
    )
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="Print tokens, parameters and peak GPU memory, then exit: 0 fits, 3 does not (loads no weights, trains nothing)",
    )
    parser.add_argument("--json", action="store_true", help="With --estimate: one JSON object on the last line")
    parser.add_argument(
        "--device",
        default=None,
        help=f"With --estimate: the memory to fit, in GiB or one of {', '.join(DEVICE_TARGETS)} "
        "(default: model.max_memory_gb, else this GPU, else dgx-spark)",
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
    modality: str,
    estimate: str | None = None,
    preflight: Callable[[BaseModel], str | None] | None = None,
) -> int:
    """Load the config, take the GPU, open (or resume) the run folder, and call `train(cfg, run, control)`.

    `argv=None` means a command-line process: the signal handlers then stay until exit, so a second SIGTERM
    during the final save still ends `stopped` with exit 0. `estimate` names the recipe's module whose
    `estimate(cfg, device)` answers `--estimate` and is logged at the start of every run. `preflight(cfg)`
    returns why this machine cannot run the config (a missing package, no GPU), refused before the GPU lock.
    `modality` ("image" or "video") is what the recipe feeds the model: a family without it is refused.
    """
    args = parse_training_args(argv, description, default_config)
    if args.estimate:
        return print_estimate(args, config_cls, estimate)
    control = RunControl(keep_handlers=argv is None)
    try:
        return train_with_control(args, control, config_cls, prefix, train, modality, estimate, preflight)
    finally:
        control.close()


def print_estimate(args, config_cls, module: str | None) -> int:
    """`--estimate`: the table (or JSON on the last line); exit 0 when it fits, 3 with what to change when not."""
    import json

    if module is None:
        return refuse("this command has no memory estimate")
    try:
        cfg = load_config(config_cls, args.config, args.overrides)
        result = importlib.import_module(module).estimate(cfg, args.device)
    except (ConfigError, EstimateError) as err:
        return refuse(str(err))
    print(format_table(result), flush=True)
    if not result.fits:
        print(does_not_fit_line(result), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(result.to_json()), flush=True)
    return 0 if result.fits else 3


def log_estimate(run: RunDir, cfg, module: str | None) -> None:
    """Print the estimate at the start of a run and keep it in `estimate.json`; a model the estimate does not
    know trains all the same."""
    if module is None or not is_main_process():
        return
    try:
        result = importlib.import_module(module).estimate(cfg, with_advice=False)
    except Exception as err:  # noqa: BLE001 - an estimate never stops a run, whatever went wrong in it
        print(f"estimate: not available for this config ({err}); training goes on", flush=True)
        return
    write_json_atomic(run.estimate_path, result.to_json())
    print(summary_line(result), flush=True)
    if not result.fits:
        print(f"warning: {does_not_fit_line(result)}", flush=True)


def train_with_control(
    args, control: RunControl, config_cls, prefix: str, train, modality: str, estimate: str | None = None, preflight=None
) -> int:
    named = RunDir(args.run_dir) if args.run_dir else None
    if problem := job_size_problem():  # before anything is written: a lone process would take the run folder
        return refuse(problem, named)
    start_distributed()
    try:
        # The run folder records absolute data folders: evaluation and the pages may read it from another folder.
        cfg = config_cls.model_validate(absolute_data_paths(load_config(config_cls, args.config, args.overrides).model_dump()))
        problem = (preflight(cfg) if preflight else None) or gpu_feature_problem(cfg.model_dump())
        if problem:
            return refuse(problem, named)
        run = resolve_run_dir(args.run_dir, prefix)
    except (ConfigError, RunError) as err:
        return refuse(str(err), named)
    try:
        if is_main_process():
            acquire_gpu_lock(run.id, kind="training")
        # After the lock, so a busy GPU is still reported at once; seconds, not minutes of retries offline.
        check_model_available(cfg.model.name, cfg.model.revision)
        family = family_lines(cfg.model, modality)
        run = open_run_for_training(run, prefix, cfg.model_dump(mode="json"), to_yaml(cfg))
    except (ConfigError, GpuBusy, RunError) as err:
        release_gpu_lock()
        return refuse(str(err), named)
    except OSError as err:
        release_gpu_lock()
        return refuse(storage_problem(err, run.path) or f"{run.path}: {err}", named)
    print(f"run folder: {run.path}", flush=True)
    if is_main_process():
        print(f"distributed: {distributed_mode()}", flush=True)
        print("\n".join(family), flush=True)
    provenance = None
    try:
        with run_lifecycle(run, control, cfg.logging.heartbeat_timeout_s):
            # Inside the lifecycle, so the heartbeat runs while git and torch answer; completed below, once the
            # lifecycle has written the end state, whatever it is.
            provenance = start_provenance(run, cfg.model_dump(mode="json"))
            if not control.poll():
                prepare_resume(run, args.restart)
                log_estimate(run, cfg, estimate)
            if not control.poll():
                train(cfg, run, control)
    except (ConfigError, GpuBusy, RunError, NoUsableCheckpoint) as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:
        problem = storage_problem(err, run.path)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return 2
    finally:
        end_provenance(run, provenance)
        release_gpu_lock()
    if is_main_process():
        print(f"state: {run.read_status()['state']}", flush=True)
    else:  # rank 0 may still be saving: the state it has not written yet is not this rank's to report
        print(f"rank {os.environ.get('RANK')}: done; rank 0 records the run's state in {run.status_path}", flush=True)
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
