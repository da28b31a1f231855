"""Tiny random-weight models of every family in the table (`core.families`), built locally with no download,
and cached.

Each mirrors its family's architecture, processors, special tokens and chat template but has about 0.3 M
parameters, a byte-level BPE tokenizer trained on a small built-in corpus, and image settings that turn any
picture into a handful of tokens. They load with the normal ``from_pretrained(path)`` code, so tests and CPU
smoke runs exercise the real code paths.

Usage::

    from core.tiny import resolve_model_name
    path = resolve_model_name("tiny:qwen2_5_vl")  # builds once, then reuses the cache

CLI::

    python -m core.tiny --kind all --out /tmp/tiny
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from core.families import FAMILIES, family_by_key
from core.files import exclusive

TINY_KINDS = tuple(family.key for family in FAMILIES)
TINY_PREFIX = "tiny:"

# Bump whenever the builder output changes so stale cached folders are not reused.
BUILDER_VERSION = "2"

_DEFAULT_CACHE_DIR = Path("~/.cache/vlm-playbook/tiny")
_CACHE_DIR_ENV = "VLM_TINY_DIR"


def _check_kind(kind: str) -> None:
    """Raise ValueError unless kind is one of TINY_KINDS."""
    if kind not in TINY_KINDS:
        raise ValueError(f"Unknown tiny model kind {kind!r}; expected one of {', '.join(TINY_KINDS)}.")


def build_tiny_model(kind: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build a tiny random-weight model and save it with its processor.

    Args:
        kind: One of TINY_KINDS.
        out_dir: Folder to write (created if missing; existing files are overwritten).
        seed: Seed for the random weights.

    Returns:
        The folder, loadable with ``AutoModelForImageTextToText`` and ``AutoProcessor``.
    """
    _check_kind(kind)
    import torch

    family = family_by_key(kind)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = family.tiny_tokenizer()
    torch.manual_seed(seed)
    model, processor = family.build_tiny(tokenizer)
    # Inside a process group, transformers writes weights and config.json on global rank 0 only, but the cache is
    # each machine's own disk: rank 1 of a two-machine job would get a folder with no model in it.
    model.should_save_on_this_rank = lambda is_main_process: is_main_process
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "tiny_model.json").write_text(
        json.dumps({"kind": kind, "builder_version": BUILDER_VERSION, "seed": seed}, indent=2) + "\n"
    )
    return out_dir


def tiny_cache_dir() -> Path:
    """Return the cache root: $VLM_TINY_DIR, else ~/.cache/vlm-playbook/tiny."""
    root = os.environ.get(_CACHE_DIR_ENV)
    return Path(root).expanduser() if root else _DEFAULT_CACHE_DIR.expanduser()


def _make_readable(folder: Path) -> None:
    """Open a built folder to other users (mkdtemp and the weight writer create it owner-only).

    The cache holds random weights only, and a shared cache may be read by another account
    (for example the app container and a CLI run as different users).
    """
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _is_complete(folder: Path) -> bool:
    """True when `folder` holds a built model: config.json is written with the weights, never without them."""
    return (folder / "config.json").is_file()


def tiny_model_path(kind: str) -> Path:
    """Return the cached folder of a tiny model, building it on first use.

    The build goes to a temporary folder that is renamed into place, so other processes never see a half-written
    model; a file lock avoids duplicate builds, and if another process still wins the race its folder is kept and
    ours discarded. An incomplete folder in the final place (left by an older builder) is replaced.
    """
    _check_kind(kind)
    root = tiny_cache_dir()
    target = root / f"{kind}-v{BUILDER_VERSION}"
    if _is_complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / f".{kind}-v{BUILDER_VERSION}.lock"):
        if _is_complete(target):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{kind}-building-", dir=root))
        try:
            build_tiny_model(kind, staging)
            if not _is_complete(staging):
                raise RuntimeError(f"building tiny:{kind} in {staging} wrote no model (no config.json)")
            _make_readable(staging)
            if target.exists() and not _is_complete(target):
                # Builds go through a staging folder and a rename, so an incomplete folder here is nobody's work in
                # progress: an older builder's leftover (rank 1 of a process group once wrote no weights).
                shutil.rmtree(target)
            try:
                os.rename(staging, target)
            except OSError:
                if not _is_complete(target):
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_name(name: str) -> str:
    """Map ``tiny:<kind>`` to a local tiny-model folder; return any other name unchanged.

    Raises:
        ValueError: If name starts with ``tiny:`` but the kind is unknown.
    """
    if not name.startswith(TINY_PREFIX):
        return name
    kind = name[len(TINY_PREFIX) :]
    if kind not in TINY_KINDS:
        allowed = ", ".join(TINY_PREFIX + k for k in TINY_KINDS)
        raise ValueError(f"Unknown tiny model {name!r}; expected one of {allowed}.")
    return str(tiny_model_path(kind))


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: build tiny models into --out, or into the cache when --out is omitted."""
    parser = argparse.ArgumentParser(prog="python -m core.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=(*TINY_KINDS, "all"), default="all")
    parser.add_argument(
        "--out", type=Path, help="Output folder (with --kind all: one sub-folder per kind). Default: the cache."
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    kinds = TINY_KINDS if args.kind == "all" else (args.kind,)
    for kind in kinds:
        if args.out is None:
            path = tiny_model_path(kind)
        else:
            path = build_tiny_model(kind, args.out / kind if args.kind == "all" else args.out, seed=args.seed)
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
