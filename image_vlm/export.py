"""Merge a run's LoRA adapter into a standalone Hugging Face model.

    python -m image_vlm.export --run runs/image-... [--out DIR]

Writes `<run>/merged/` (safetensors + processor) by default and keeps `adapter/`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.config import ConfigError, validate_config
from core.models import is_adapter_dir, merge_adapter
from core.runs import RunDir
from image_vlm.config import ImageConfig


def main(argv=None, config_cls=ImageConfig) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="Finished run folder")
    parser.add_argument("--out", default=None, help="Output folder (default: <run>/merged)")
    args = parser.parse_args(argv)
    run = RunDir(args.run)
    try:
        cfg = validate_config(config_cls, run.read_config(), source=str(run.config_path))
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {run.path}: not a usable run folder ({err})", file=sys.stderr)
        return 2
    if not is_adapter_dir(run.adapter_dir):
        artifact = run.final_artifact()
        reason = f"it was fully fine-tuned; {artifact} is already a standalone model" if artifact else "it has no adapter/ yet"
        print(f"error: nothing to merge in {run.path}: {reason}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else run.path / "merged"
    result = merge_adapter(cfg.model, run.adapter_dir, out)
    print(f"merged {result['changed_tensors']} tensors into {out} (reload checked on {result['checked_tensor']}); adapter kept in {run.adapter_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
