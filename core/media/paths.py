"""Files of a user's dataset folder reached through symlinks: the one check that images and clips share.

A downloaded or hand-made dataset can hold links: a link inside the folder is fine, but one that loops never
reaches a file (and makes `stat` and `Path.resolve` raise), and one that leads out of the folder would let a
metadata line or an image folder read any file on the machine.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

SYMLINK_LOOP = (
    "is a symlink loop (the link leads back to itself and never reaches a file); delete it or point it at the real file"
)


def link_problem(root: str | os.PathLike, path: str | os.PathLike) -> tuple[str, str] | None:
    """(kind, why) when `path`, a file under dataset folder `root`, cannot be used because of a symlink, else None.

    Kinds: "symlink_loop", or "unsafe_path" for a link that leads outside `root`. A missing file is not this
    check's problem (None): the reader reports it.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "loop.png").symlink_to("loop.png")
    >>> link_problem(root, root / "loop.png")[0], link_problem(root, root / "absent.png")
    ('symlink_loop', None)
    """
    path = Path(path)
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symlink_loop", SYMLINK_LOOP
    # realpath without strict never raises: a loop was caught above, a missing target resolves as far as it goes.
    resolved = Path(os.path.realpath(path))
    if not resolved.is_relative_to(os.path.realpath(root)):
        return "unsafe_path", (
            f"leads outside {root} (through a symlink) to {resolved}; "
            "copy the file into the dataset folder instead of linking to it"
        )
    return None


def stat_without_following_loops(path: str | os.PathLike) -> os.stat_result:
    """The file's stat, or the link's own when the link loops or points nowhere (so listing never fails on one)."""
    try:
        return os.stat(path)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENOENT):
            raise
        return os.lstat(path)


def in_dataset(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Where a media path of `metadata.jsonl` or a pairs file points: a relative one is relative to the dataset
    root, whatever the working folder (an absolute one stays as it is).

    >>> in_dataset("data/fire", "train/a.png"), in_dataset("data/fire", "/srv/b.png")
    (PosixPath('data/fire/train/a.png'), PosixPath('/srv/b.png'))
    """
    path = Path(path)
    return path if path.is_absolute() else Path(root) / path


def dataset_relative(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """How a pairs file stores a media path: relative to the dataset root when the file is inside it (so the pairs
    still read when the run is opened from another working folder), else absolute. `in_dataset` reads it back.

    >>> dataset_relative("data/fire", "data/fire/train/a.png"), dataset_relative("/data/fire", "/srv/b.png")
    ('train/a.png', '/srv/b.png')
    """
    root_abs, path_abs = Path(os.path.abspath(root)), Path(os.path.abspath(path))
    return path_abs.relative_to(root_abs).as_posix() if path_abs.is_relative_to(root_abs) else str(path_abs)
