"""Trainer checkpoints are complete or ignored.

A `checkpoint-N` folder counts only once `checksums.json` is in it: writing that file is
the last act of a save, so a save killed midway, or a folder half-deleted by rotation, never
looks usable. Resuming verifies the hashes too, and a checkpoint that fails is set aside under
a name the rotation does not glob, so the one before it is used.

Rotation (`save_total_limit`) is ours, not the Trainer's: the Trainer deletes old checkpoints
before the new one's `checksums.json` exists, so with a limit of 1 a crash in between would
leave nothing to resume from. `rotated_after_seal` turns the Trainer's rotation off and rotates after
each save is sealed, keeping the newest complete ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import xxhash

from core.processes import agreed_by_all_ranks

CHECKSUMS = "checksums.json"
ALGORITHM = "xxh3_64"
SET_ASIDE_NOTE = "SET_ASIDE.txt"
SET_ASIDE_PREFIX = "set-aside-"  # an unusable checkpoint's new name starts so: no `checkpoint-*` glob matches it
TRAINER_STATE = "trainer_state.json"  # the Trainer's own record of a checkpoint's step
CHUNK = 8 * 1024 * 1024
TEMP_SUFFIX = ".tmp"
# safetensors itself refuses headers above 100 MB; a larger length means a corrupt file.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class NoUsableCheckpoint(RuntimeError):
    """Checkpoints exist but none of them can be resumed from."""


def file_hash(path: Path) -> str:
    """The xxh3_64 hex digest of a file, read in 8 MiB chunks."""
    digest = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _checkpoint_files(checkpoint: Path) -> list[Path]:
    # Symlinks are skipped: the Trainer writes none, and following one could hash a file outside the folder.
    return sorted(
        p
        for p in checkpoint.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name != CHECKSUMS and not p.name.endswith(TEMP_SUFFIX)
    )


def record_checksums(checkpoint: Path) -> Path:
    """Hash every file of a saved checkpoint into its `checksums.json`.

    Call it after everything else of the save is on disk: the file marks the checkpoint complete.

    Args:
        checkpoint: A `checkpoint-N` folder.

    Returns:
        The path of the written `checksums.json`.
    """
    checkpoint = Path(checkpoint)
    files = {
        p.relative_to(checkpoint).as_posix(): {"size": p.stat().st_size, "hash": file_hash(p)}
        for p in _checkpoint_files(checkpoint)
    }
    target = checkpoint / CHECKSUMS
    fd, tmp = tempfile.mkstemp(dir=checkpoint, prefix=f".{CHECKSUMS}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"algorithm": ALGORITHM, "files": files}, f, indent=1, sort_keys=True)
            f.flush()
            # The marker must not reach the disk before its own bytes do.
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def safetensors_problem(path: Path) -> str | None:
    """Why a `.safetensors` file's header does not account for its size, or None when it does."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path.name} is too short for a safetensors header"
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, MAX_SAFETENSORS_HEADER):
            return f"{path.name} has a header length of {length} bytes in a {size}-byte file"
        try:
            header = json.loads(f.read(length))
            ends = [0] + [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
            end = max(int(e) for e in ends)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return f"{path.name} has an unreadable safetensors header"
    if end + 8 + length != size:
        return f"{path.name} is {size} bytes but its header describes {end + 8 + length}"
    return None


def _listed_files(checkpoint: Path) -> tuple[dict, str | None]:
    try:
        record = json.loads((checkpoint / CHECKSUMS).read_text())
    except FileNotFoundError:
        return {}, f"{CHECKSUMS} is missing (the save did not finish)"
    except (OSError, ValueError) as exc:
        return {}, f"{CHECKSUMS} is unreadable ({exc})"
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or record.get("algorithm") != ALGORITHM:
        return {}, f"{CHECKSUMS} is not a {ALGORITHM} file list"
    for rel, entry in files.items():
        # A listed path that leaves the folder would make the check read someone else's file.
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            return {}, f"{CHECKSUMS} lists a path outside the checkpoint: {rel}"
        if not (isinstance(entry, dict) and isinstance(entry.get("size"), int) and isinstance(entry.get("hash"), str)):
            return {}, f"{CHECKSUMS} has a malformed entry for {rel}"
    return files, None


def checkpoint_problem(checkpoint: Path, full: bool = False) -> str | None:
    """Why a checkpoint folder cannot be used, or None when it can.

    Args:
        checkpoint: A `checkpoint-N` folder.
        full: Also recompute every file's hash (reads all of it; done before resuming).

    Returns:
        A short reason naming the offending file, or None. Never raises for a bad folder.
    """
    checkpoint = Path(checkpoint)
    try:
        if not checkpoint.is_dir():
            return f"{checkpoint.name} is not a folder"
        files, problem = _listed_files(checkpoint)
        if problem:
            return problem
        for rel, entry in files.items():
            path = checkpoint / rel
            if not path.is_file():
                return f"{rel} is missing"
            if (size := path.stat().st_size) != entry["size"]:
                return f"{rel} is {size} bytes, {CHECKSUMS} recorded {entry['size']}"
        try:
            state = json.loads((checkpoint / TRAINER_STATE).read_text())
        except FileNotFoundError:
            return f"{TRAINER_STATE} is missing"
        except ValueError as exc:
            return f"{TRAINER_STATE} is not valid JSON ({exc})"
        if not isinstance(state, dict):
            return f"{TRAINER_STATE} is not a JSON object"
        for path in sorted(checkpoint.rglob("*.safetensors")):
            if problem := safetensors_problem(path):
                return problem
        if full:
            for rel, entry in files.items():
                if file_hash(checkpoint / rel) != entry["hash"]:
                    return f"{rel} does not match its recorded {ALGORITHM} hash"
    except OSError as exc:
        return f"unreadable ({exc})"
    return None


def checkpoint_path(folder: Path | str, step: int) -> Path:
    """The `checkpoint-N` folder the Trainer saves at `step` in `folder` (its own naming, which `checkpoint_step`
    reads back).

    >>> checkpoint_path("runs/r/checkpoints", 120).as_posix()
    'runs/r/checkpoints/checkpoint-120'
    """
    return Path(folder) / f"checkpoint-{step}"


def checkpoint_step(path: Path | str) -> int | None:
    """The step of a `checkpoint-N` folder, or None for any other name.

    >>> checkpoint_step("runs/r/checkpoints/checkpoint-120")
    120
    >>> checkpoint_step("set-aside-checkpoint-120") is None
    True
    """
    match = re.fullmatch(r"checkpoint-(\d+)", Path(path).name)
    return int(match.group(1)) if match else None


def checkpoint_folders(folder: Path) -> list[Path]:
    """Every `checkpoint-N` subfolder of `folder`, by step (oldest first), whatever its state."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [child for child in folder.iterdir() if child.is_dir() and checkpoint_step(child) is not None]
    return sorted(found, key=checkpoint_step)


def complete_checkpoints(folder: Path) -> list[Path]:
    """The `checkpoint-N` subfolders of `folder` that pass the cheap check, by step (oldest first)."""
    return [path for path in checkpoint_folders(folder) if checkpoint_problem(path) is None]


def resume_point(folder: Path) -> Path | None:
    """The checkpoint every rank resumes from: rank 0's newest complete one in `folder`, or None to start fresh.

    A rank whose own disk lacks it stops with a message instead of training from another step.
    """
    newest = next(reversed(complete_checkpoints(folder)), None)
    chosen = agreed_by_all_ranks(newest.name if newest else None)  # a name: each machine reads its own disk
    if chosen is None:
        return None
    checkpoint = Path(folder) / chosen
    if checkpoint_problem(checkpoint) is not None:
        raise NoUsableCheckpoint(
            f"rank {os.environ.get('RANK', '0')}: rank 0 resumes from {checkpoint}, which this machine's disk does not "
            "hold complete; put the run folder on storage every machine shares, or copy it there"
        )
    return checkpoint


def set_aside(checkpoint: Path, reason: str) -> Path:
    """Move an unusable checkpoint out of the way, keeping it for inspection.

    The new name, `set-aside-checkpoint-N[-k]`, does not match `checkpoint-*`, so neither
    the Trainer's rotation nor a resume ever picks it up again.

    Args:
        checkpoint: The `checkpoint-N` folder.
        reason: Why it was set aside; written to `SET_ASIDE.txt` inside it.

    Returns:
        The folder's new path.
    """
    checkpoint = Path(checkpoint)
    base = f"{SET_ASIDE_PREFIX}{checkpoint.name}"
    target, k = checkpoint.with_name(base), 1
    # os.rename silently replaces an empty directory, so a taken name is checked first.
    while target.exists():
        k += 1
        target = checkpoint.with_name(f"{base}-{k}")
    checkpoint.rename(target)
    (target / SET_ASIDE_NOTE).write_text(reason.rstrip("\n") + "\n")
    return target


def choose_resume_checkpoint(folder: Path, restart: bool = False, log: Callable[[str], object] = print) -> Path | None:
    """The newest checkpoint in `folder` that passes the full check; bad ones are set aside.

    Args:
        folder: The folder holding the `checkpoint-N` subfolders.
        restart: When checkpoints exist but none is usable, start from step 0 instead of raising.
        log: Receives one line per checkpoint set aside, and for a restart.

    Returns:
        The checkpoint to resume from, or None to train from step 0.

    Raises:
        NoUsableCheckpoint: Checkpoints existed, none was usable, and `restart` is False.
    """
    folder = Path(folder)
    candidates = checkpoint_folders(folder)
    for checkpoint in reversed(candidates):
        problem = checkpoint_problem(checkpoint, full=True)
        if problem is None:
            return checkpoint
        moved = set_aside(checkpoint, problem)
        log(f"{checkpoint.name} in {folder} is unusable ({problem}); set aside as {moved}")
    if not candidates:
        # Checkpoints set aside by an earlier launch and nothing saved since: still not a fresh start.
        set_aside_before = sorted(folder.glob(f"{SET_ASIDE_PREFIX}checkpoint-*")) if folder.is_dir() else []
        if not set_aside_before or restart:
            if set_aside_before:
                log(f"no usable checkpoint in {folder} (--restart): training restarts from step 0")
            return None
        raise NoUsableCheckpoint(
            f"no usable checkpoint in {folder} ({len(set_aside_before)} set aside as unusable); "
            "relaunch with --restart to train from step 0"
        )
    if restart:
        log(f"no usable checkpoint in {folder} (--restart): training restarts from step 0")
        return None
    which = "the only checkpoint" if len(candidates) == 1 else f"none of the {len(candidates)} checkpoints"
    raise NoUsableCheckpoint(
        f"{which} in {folder} is {'not ' if len(candidates) == 1 else ''}usable "
        f"(set aside under {folder}/set-aside-checkpoint-*); relaunch with --restart to train from step 0"
    )


def rotate_checkpoints(folder: Path, keep: int, protect: Path | str | None = None) -> list[Path]:
    """Delete what the newest `keep` complete checkpoints in `folder` make redundant; returns what was deleted.

    Deleted: older complete checkpoints beyond `keep` (except `protect`, the Trainer's best checkpoint), and
    incomplete `checkpoint-N` folders older than the newest complete one (saves that died, or deletions that
    did). A checkpoint loses its `checksums.json` first, so a deletion cut short by a crash leaves a folder that
    reads incomplete, never one that looks usable with files missing. Incomplete folders newer than the newest
    complete one are left alone: a save may still be writing one.
    """
    complete = complete_checkpoints(folder)
    if not complete:
        return []
    kept = {path.name for path in complete[-max(1, keep):]} | ({Path(protect).name} if protect else set())
    newest = checkpoint_step(complete[-1])
    doomed = [
        path for path in checkpoint_folders(folder)
        if path.name not in kept and (path in complete or checkpoint_step(path) < newest)
    ]
    for path in doomed:
        (path / CHECKSUMS).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def seal_and_rotate(checkpoint: Path, keep: int, protect: Path | str | None = None) -> None:
    """After a save: mark `checkpoint` complete (unless its save already did), then rotate its folder to `keep`."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        return
    if not (checkpoint / CHECKSUMS).exists():
        record_checksums(checkpoint)
    rotate_checkpoints(checkpoint.parent, keep, protect)


def _rotation_after_seal(keep: int):
    """A TrainerCallback that seals and rotates after each save (transformers is imported only here: this module
    stays light for the launcher)."""
    from transformers import TrainerCallback

    class RotateAfterSeal(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if args.should_save:
                checkpoint = checkpoint_path(args.output_dir, state.global_step)
                seal_and_rotate(checkpoint, keep, state.best_model_checkpoint)

    return RotateAfterSeal()


@contextmanager
def rotated_after_seal(trainer) -> Iterator[None]:
    """Within the block, the Trainer keeps every checkpoint it saves and we rotate them to its `save_total_limit`,
    only once the new one is sealed: a crash at any moment of a save leaves a complete checkpoint to resume from.

    The callback goes last, after the run's own (whose `on_save` writes `checksums.json`), and seals the
    checkpoint itself when none did.
    """
    keep = trainer.args.save_total_limit
    if keep is None or keep <= 0:
        yield
        return
    callback = _rotation_after_seal(keep)
    trainer.args.save_total_limit = None  # the Trainer rotates before on_save, so before the checksums exist
    trainer.add_callback(callback)
    try:
        yield
    finally:
        trainer.remove_callback(callback)
        trainer.args.save_total_limit = keep


def resume_arguments(trainer, checkpoint: Path | None, log: Callable[[str], object] = print) -> dict[str, str] | None:
    """The keyword arguments of `trainer.train()` that resume from `checkpoint` ({} to start afresh), or None when
    nothing is left to train.

    A checkpoint saved at the last step (`global_step >= max_steps`, a run killed between its last save
    and its end) is loaded instead of resumed: the Trainer's loop would run one step past `max_steps`.
    """
    if checkpoint is None:
        return {}
    try:
        state = json.loads((Path(checkpoint) / TRAINER_STATE).read_text())
    except (OSError, json.JSONDecodeError):
        state = {}
    if state.get("max_steps") and state.get("global_step", 0) >= state["max_steps"]:
        log(f"{checkpoint} is the last step ({state['global_step']} of {state['max_steps']}): keeping its weights, nothing left to train")
        trainer._load_from_checkpoint(str(checkpoint))
        return None
    log(f"resuming from {checkpoint}")
    return {"resume_from_checkpoint": str(checkpoint)}
