"""A run's weights, out of its folder and merged for export (`core.models.load_run_model` loads them for evaluation).

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
    out = Path(args.out) if args.out else run.merged_dir
    result = merge_adapter(cfg.model, run.adapter_dir, out)
    print(f"merged {result['changed_tensors']} tensors into {out} (reload checked on {result['checked_tensor']}); adapter kept in {run.adapter_dir}")
    return 0
