"""A run's weights, out of its folder with a model card, and pushed to the Hugging Face Hub.

    python -m image_vlm.export --run runs/image-... [--out DIR] [--adapter-only]
    python -m video_vlm.export --run runs/video-... [--out DIR] [--adapter-only]
    python -m core.export push --run RUN --repo ORG/NAME [--public] [--dry-run]

Export merges a LoRA run's adapter into `<run>/merged/` (safetensors + processor, `--out` puts it elsewhere) and
keeps `adapter/`; `--adapter-only` leaves the adapter as it is. A fully fine-tuned run's `model/` is already
standalone: export only writes its card. Every export writes `README.md`, the model card (`core.model_card`),
into the folder that leaves the box. Push uploads that one folder: never checkpoints, logs or run files. Each recipe
hands its own config class, so this module never imports a recipe.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import BaseModel

from core.config import ConfigError, validate_config
from core.files import human_bytes
from core.model_card import TAG, model_card, recipe_of
from core.models import merge_adapter
from core.provenance import read_provenance
from core.runs import RunDir, holds_adapter, holds_weights

CARD = "README.md"  # the Hub reads a repository's model card from this name
TOKEN_VARIABLE = "HF_TOKEN"


def export_main(argv, config_cls: type[BaseModel], description: str) -> int:
    """The export CLI, reading the run's config with `config_cls`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="Finished run folder")
    parser.add_argument("--out", default=None, help="Output folder of the merged model (default: <run>/merged)")
    parser.add_argument("--adapter-only", action="store_true",
                        help="Do not merge: write the model card into adapter/, which push then uploads")
    args = parser.parse_args(argv)
    run = RunDir(args.run)
    try:
        cfg = validate_config(config_cls, run.read_config(), source=str(run.config_path))
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {run.path}: not a usable run folder ({err})", file=sys.stderr)
        return 2
    if not holds_adapter(run.adapter_dir):
        if holds_weights(run.model_dir):
            # Full fine-tuning: model/ already is what leaves the box; copying 16 GB to merged/ would add nothing.
            card = write_model_card(run, run.model_dir, adapter=False)
            print(f"{run.model_dir} is already a standalone model (fully fine-tuned): wrote its model card {card}")
            return 0
        print(f"error: nothing to export in {run.path}: it has no adapter/ or model/ yet (has it finished?)",
              file=sys.stderr)
        return 2
    if args.adapter_only:
        card = write_model_card(run, run.adapter_dir, adapter=True)
        print(f"wrote the adapter's model card {card}; push uploads {run.adapter_dir}")
        return 0
    out = Path(args.out) if args.out else run.merged_dir
    result = merge_adapter(cfg.model, run.adapter_dir, out)
    card = write_model_card(run, out, adapter=False)
    print(f"merged {result['changed_tensors']} tensors into {out} (reload checked on {result['checked_tensor']}); "
          f"adapter kept in {run.adapter_dir}; model card {card}")
    return 0


def write_model_card(run: RunDir, folder: Path, adapter: bool) -> Path:
    """Write `folder/README.md`, the model card of `run`'s weights in `folder`; return its path."""
    text = model_card(run.read_config(), run.read_status(), run.eval_reports(), read_provenance(run), adapter=adapter)
    path = Path(folder) / CARD
    tmp = path.with_name(f".{CARD}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def exported_folder(run: RunDir) -> Path | None:
    """The folder an export made ready to leave the box (weights and a card): `merged/`, else a fully fine-tuned
    run's `model/`, else an `--adapter-only` export's `adapter/`; None before any export."""
    for folder in (run.merged_dir, run.model_dir, run.adapter_dir):
        if holds_weights(folder) and is_our_card(folder / CARD):
            return folder
    return None


def is_our_card(path: Path) -> bool:
    """Whether `path` is a card export wrote: PEFT's save_pretrained leaves its own README.md in adapter/, which
    says nothing of the run (and may name a local base model's path)."""
    try:
        return TAG in path.read_text(errors="replace").split("\n---", 1)[0]
    except OSError:
        return False


def upload_files(folder: Path) -> list[tuple[str, int]]:
    """(path inside `folder`, size in bytes) of every file push sends, hidden files left out as upload_folder
    leaves them."""
    files = []
    for path in sorted(Path(folder).rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            files.append((relative.as_posix(), path.stat().st_size))
    return files


def push(run_dir: str | Path, repo: str, public: bool = False, dry_run: bool = False, log=print) -> int:
    """Upload a run's exported folder to the Hub repository `repo` (private unless `public`); exit status."""
    run = RunDir(run_dir)
    if not run.config_path.is_file():
        log(f"error: {run.path}: not a run folder (no config.yaml)")
        return 2
    folder = exported_folder(run)
    if folder is None:
        recipe = recipe_of(run.read_config())
        log(f"error: {run.path} has nothing exported yet: run `python -m {recipe}.export --run {run.path}` first")
        return 2
    files = upload_files(folder)
    visibility = "public" if public else "private"
    if dry_run:
        log(f"dry run: would upload {len(files)} files ({human_bytes(sum(s for _, s in files))}) from {folder} "
            f"to {repo} ({visibility}); nothing sent")
        for name, size in files:
            log(f"  {name}  {human_bytes(size)}")
        return 0
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        log(f"error: no Hugging Face token: set {TOKEN_VARIABLE} (a write token from huggingface.co/settings/tokens) "
            "or run `hf auth login`")
        return 2
    api = HfApi(token=token)
    url = api.create_repo(repo, private=not public, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message=f"Upload {run.id} ({folder.name}/)")
    log(f"pushed {len(files)} files from {folder} to {getattr(url, 'url', url) or repo} ({visibility})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    push_parser = sub.add_parser("push", help="Upload a run's exported folder (with its model card) to the Hub")
    push_parser.add_argument("--run", required=True, help="Run folder, exported first with <recipe>.export")
    push_parser.add_argument("--repo", required=True, help="Hub repository id, ORG/NAME (created if missing)")
    push_parser.add_argument("--public", action="store_true", help="Create the repository public (default: private)")
    push_parser.add_argument("--dry-run", action="store_true", help="List the files and their sizes; send nothing")
    args = parser.parse_args(argv)
    if "/" not in args.repo.strip("/"):
        print(f"error: --repo {args.repo!r}: expected ORG/NAME (your user name or an organisation, then the model's "
              "name)", file=sys.stderr)
        return 2
    return push(args.run, args.repo, args.public, args.dry_run,
                log=lambda line: print(line, file=sys.stderr if line.startswith("error:") else sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
