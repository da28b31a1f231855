"""Archiving a run: its folder moved aside, under `<runs root>/.archive/`, never deleted.

A failed or abandoned run clutters every list (the Runs page, the compare and evaluation pickers). Archiving moves
the whole folder out of them in one rename on the same filesystem; moving it back restores it as it was. Runs that
are starting, running or stopping are refused: their trainer still writes into the folder.

    python -m core.archive RUN_DIR    # the same from the command line
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from core.runs import ACTIVE_STATES, RunDir, runs_root

ARCHIVE_FOLDER = ".archive"  # hidden, and without a status.json: list_runs never lists it


class ArchiveError(RuntimeError):
    """A run that cannot be archived; the message says why."""


def archive_dir(root: str | Path | None = None) -> Path:
    """Where archived runs go: `.archive/` in the runs folder (the same filesystem, so a move is one rename).

    >>> archive_dir("/srv/runs")
    PosixPath('/srv/runs/.archive')
    """
    return Path(root if root is not None else runs_root()) / ARCHIVE_FOLDER


def archive_run(run: RunDir, root: str | Path | None = None) -> Path:
    """Move `run`'s folder into the archive and return its new place (`<id>`, or `<id>-2`, ... when the archive
    already holds one by that name).

    Raises:
        ArchiveError: The run is active, is not a folder of `root`, or the move failed.
    """
    root = Path(root if root is not None else runs_root())
    if not run.exists():
        raise ArchiveError(f"run {run.id}: its folder {run.path} no longer exists")
    if run.path.resolve().parent != root.resolve():
        raise ArchiveError(f"run {run.id}: {run.path} is not a run folder of {root}")
    state = run.read_status().get("state")
    if state in ACTIVE_STATES:
        raise ArchiveError(f"run {run.id} is {state}: stop it first (its trainer still writes into the folder)")
    target = archive_dir(root) / run.id
    index = 1
    while target.exists():
        index += 1
        target = archive_dir(root) / f"{run.id}-{index}"
    try:
        target.parent.mkdir(exist_ok=True)
        os.rename(run.path, target)
    except OSError as err:
        raise ArchiveError(f"run {run.id}: cannot move {run.path} to {target} ({err.strerror or err})") from None
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.archive",
                                     description="Move ended runs aside (never delete them).")
    parser.add_argument("runs", nargs="+", help="run folders to archive")
    args = parser.parse_args(argv)
    code = 0
    for path in args.runs:
        run = RunDir(path)
        try:
            print(f"archived {run.id}: {archive_run(run, run.path.parent)}")
        except ArchiveError as err:
            print(f"not archived: {err}")
            code = 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
