"""A run's weights, out of its folder: which ones to use, loaded for evaluation, and merged for export.

    python -m image_vlm.export --run runs/image-... [--out DIR]
    python -m video_vlm.export --run runs/video-... [--out DIR]

Export writes `<run>/merged/` (safetensors + processor) by default and keeps `adapter/`. Each recipe hands its
own config class, so this module never imports a recipe.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import BaseModel

from core.config import ConfigError, validate_config
from core.models import merge_adapter
from core.runs import RunDir, holds_adapter


def load_run_model(run: RunDir, cfg, baseline: str | None = None, **processor_kwargs):
    """(tuned model, model for base answers, processor, artifact) of a run, for evaluation.

    The artifact is the run's newest weights: the final adapter/ or model/, else its latest checkpoint (with a
    note). With an adapter both models are the same object (the adapter is switched off for base answers); a
    fully fine-tuned run needs a second copy of the base weights. `baseline` names a finished stage of the run
    (`warm_start`, an SFT stage) whose weights answer in the base's place: what a later stage (DPO) started from,
    so the comparison shows what that stage added.
    """
    from core.models import load_base_and_tuned, load_processor, load_tuned

    artifact = run.newest_weights()
    if artifact is None:
        raise ConfigError(f"{run.path}: no adapter/ or checkpoint yet; train first (state: {run.read_status()['state']})")
    if artifact != run.final_artifact():
        print(f"note: {run.id} has not finished; evaluating {artifact.relative_to(run.path)}", flush=True)
    if baseline:
        start = run.stage_artifact(baseline)
        if start is None:
            finished = sorted(p.name for p in (run.path / "stages").glob("*") if run.stage_artifact(p.name)) or ["none"]
            raise ConfigError(f"{run.path}: no finished stage {baseline!r} to compare against (finished stages: "
                              f"{', '.join(finished)})")
        model = load_tuned(cfg.model, artifact, cfg.finetune)
        base = load_tuned(cfg.model, start, cfg.finetune)
    else:
        model, base = load_base_and_tuned(cfg.model, artifact, cfg.finetune)
    return model, base, load_processor(cfg.model, **processor_kwargs), artifact


def report_name(split: str, baseline: str | None) -> str:
    """An evaluation report's file stem: the split, and the stage it compares against when not the base.

    >>> report_name("test", None), report_name("test", "warm_start")
    ('test', 'test-vs-warm_start')
    """
    return f"{split}-vs-{baseline}" if baseline else split


def export_main(argv, config_cls: type[BaseModel], description: str) -> int:
    """The export CLI, reading the run's config with `config_cls`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="Finished run folder")
    parser.add_argument("--out", default=None, help="Output folder (default: <run>/merged)")
    args = parser.parse_args(argv)
    run = RunDir(args.run)
    try:
        cfg = validate_config(config_cls, run.read_config(), source=str(run.config_path))
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {run.path}: not a usable run folder ({err})", file=sys.stderr)
        return 2
    if not holds_adapter(run.adapter_dir):
        artifact = run.final_artifact()
        reason = f"it was fully fine-tuned; {artifact} is already a standalone model" if artifact else "it has no adapter/ yet"
        print(f"error: nothing to merge in {run.path}: {reason}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else run.path / "merged"
    result = merge_adapter(cfg.model, run.adapter_dir, out)
    print(f"merged {result['changed_tensors']} tensors into {out} (reload checked on {result['checked_tensor']}); adapter kept in {run.adapter_dir}")
    return 0
