"""The command-line entries both recipes share (`train.py`, `evaluate.py`): config, run folder, lifecycle, exit codes.

Exit codes: 0 when the job ends `finished` or `stopped`; 2 for a problem the user can fix (a bad config
value, a run folder that cannot be used, a GPU held by another run), with one line saying what and where.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from pydantic import BaseModel

from core.config import ConfigError, load_config, to_yaml
from core.jobs import GpuBusy
from core.metrics import run_lifecycle
from core.runs import RunDir, RunError, open_run_for_training


def parse_training_args(argv, description: str, default_config: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=default_config, help=f"YAML config (default: {default_config})")
    parser.add_argument("--run-dir", default=None, help="Run folder to create or resume (default: runs/<recipe>-<time>)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=10")
    return parser.parse_args(argv)


def run_training_main(
    argv,
    *,
    config_cls: type[BaseModel],
    prefix: str,
    default_config: str,
    description: str,
    train: Callable[[BaseModel, RunDir, object], None],
) -> int:
    """Load the config, open (or resume) the run folder, and call `train(cfg, run, stopper)` inside the lifecycle."""
    args = parse_training_args(argv, description, default_config)
    try:
        cfg = load_config(config_cls, args.config, args.overrides)
        run = open_run_for_training(args.run_dir, prefix, cfg.model_dump(mode="json"), to_yaml(cfg))
    except (ConfigError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run folder: {run.path}", flush=True)
    try:
        with run_lifecycle(run) as stopper:
            train(cfg, run, stopper)
    except (ConfigError, GpuBusy) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"state: {run.read_status()['state']}", flush=True)
    return 0


def run_evaluation_main(
    run_path: str, evaluate: Callable[[RunDir], dict], summarise: Callable[[RunDir, dict], None]
) -> int:
    """Check that `run_path` is a run folder, call `evaluate(run)`, then `summarise(run, report)`.

    A folder without `config.yaml`, a bad config value or unusable data exits 2 with one line saying why.
    """
    run = RunDir(run_path)
    if not run.config_path.exists():
        print(f"error: {run.path} is not a run folder (no config.yaml)", file=sys.stderr)
        return 2
    try:
        report = evaluate(run)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summarise(run, report)
    return 0
