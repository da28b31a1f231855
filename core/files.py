"""Files the product writes: JSON replaced atomically, and folders linked rather than copied where the disk allows."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core.config import ConfigError

# Held while a synthetic dataset is generated into its folder (hidden, so dataset checks skip it).
SYNTHETIC_LOCK = ".synthetic.lock"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file in the same folder, then rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created, with its folder, if missing) across processes: the ranks of
    one job, or two containers on one volume. The first holder builds; the others wait, then find it built."""
    from filelock import FileLock

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path):
        yield


def occupied_folder_problem(root: str | Path, lacks: str, what: str, ignore: tuple[str, ...] = ()) -> str | None:
    """Why synthetic `what` must not be generated into `root`, which lacks `lacks`: it holds something else
    (`ignore` aside, e.g. the lock the generating rank holds). None when the folder is missing or empty.

    A real dataset missing its train split or its metadata.jsonl must not get synthetic samples mixed into it.

    >>> root = Path(tempfile.mkdtemp())
    >>> occupied_folder_problem(root / "new", "train/", "images") is None, occupied_folder_problem(root, "train/", "images")
    (True, None)
    >>> (root / "valid").mkdir(); (root / "notes.txt").write_text("x") and None
    >>> occupied_folder_problem(root, "train/", "images").split(": ", 2)[2].split(";")[0]
    'it holds 2 entries (notes.txt, valid/) but no train/'
    """
    root = Path(root)
    if not root.is_dir():
        return f"data.synthetic: {root}: it is a file, not a folder" if root.exists() else None
    entries = [child for child in root.iterdir() if child.name not in ignore]
    names = sorted(f"{child.name}/" if child.is_dir() else child.name for child in entries)
    if not names:
        return None
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (
        f"data.synthetic: {root}: it holds {len(names)} entr{'y' if len(names) == 1 else 'ies'} ({shown}) but no "
        f"{lacks}; synthetic {what} go only into a missing or empty folder: set data.root to a new folder, or turn "
        "data.synthetic off"
    )


def generate_synthetic_once(root: Path, marker: Path, what: str, generate: Callable[[], None]) -> None:
    """Generate a synthetic dataset into `root` unless its `marker` (the train split, metadata.jsonl) exists.

    The ranks of one job all get here: one generates while the others wait, so none reads a sample being written.
    A folder that holds something else is refused with a ConfigError naming it (before the lock too, so a refused
    folder does not even get the lock file, unless a rank generates there already and the check under the lock
    decides).
    """
    lacks = f"{marker.name}/" if marker.suffix == "" else marker.name
    if not (root / SYNTHETIC_LOCK).exists() and (problem := occupied_folder_problem(root, lacks, what)):
        raise ConfigError(problem)
    with exclusive(root / SYNTHETIC_LOCK):
        if not marker.exists():
            if problem := occupied_folder_problem(root, lacks, what, ignore=(SYNTHETIC_LOCK,)):
                raise ConfigError(problem)
            print(f"generating synthetic {what} in {root}", flush=True)
            generate()


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` to `target`, or copy it where links are not possible (another filesystem, or a
    filesystem without them); an existing target is kept."""
    if os.path.lexists(target):
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def link_tree(source: Path, target: Path) -> None:
    """Replace `target` with a copy of the folder `source`, made of hard links where the filesystem allows (a
    full model is not duplicated on disk)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=link_or_copy)


def human_bytes(size: float) -> str:
    """
    >>> human_bytes(512), human_bytes(12_345), human_bytes(3_400_000)
    ('512 B', '12.3 KB', '3.4 MB')
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"
