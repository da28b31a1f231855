"""Files the product writes: JSON replaced atomically, and folders linked rather than copied where the disk allows."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
