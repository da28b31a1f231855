"""Decoded frames kept on disk, so a clip window is decoded once, not once per epoch, evaluation and compare.

An entry holds the uint8 frames [N, H, W, 3] of one window and each frame's time in seconds, as a `.npz` file
(uncompressed: frames barely compress, and reading stays a copy). Its key is a hash of:

* the file's identity: resolved path, size and modification time (ns), so an edited or replaced clip is
  a new entry and the stale one is never read;
* the sampling settings the caller passes (frames, window, size, ...), so changing any of them is a miss;
* `CACHE_VERSION`, raised whenever `read_frames` would return different pixels for the same settings.

Writes are atomic (a temporary file renamed into place), so several processes (DataLoader workers, two
containers sharing the dataset) can fill the same folder, and an entry that is cut short or unreadable is
deleted and decoded again. The folder is bounded: past `max_bytes` the least recently used entries (a hit
refreshes the modification time) are removed until it is under 90 % of the bound.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from core.media.errors import plain_reason

CACHE_VERSION = 3  # 2: one shared antialiased resize for every decoder; 3: frame times kept with the frames
# Each process re-measures the folder after this many writes, so that the writes of other processes count too.
_RESCAN_EVERY = 32
_SUFFIX = ".npz"


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies a file's content without reading it: resolved path, size, modification time (ns)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class FrameCache:
    """A bounded folder of decoded frames; see the module docstring for the key and the bound.

    Attributes:
        folder: Where entries live (created on first write).
        max_bytes: Bound on the folder's size.
        hits, misses: Lookups in this process, for logs and benchmarks.
    """

    def __init__(self, folder: str | os.PathLike, max_bytes: int):
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self._size: int | None = None  # bytes in the folder as this process last measured them, plus its writes
        self._writes_since_scan = 0
        self._unwritable_reported = False

    def key(self, path: str | os.PathLike, settings: dict[str, Any]) -> str:
        identity = {"file": file_identity(path), "settings": settings, "version": CACHE_VERSION}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def entry_path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}{_SUFFIX}"

    def get(self, path: str | os.PathLike, settings: dict[str, Any]) -> tuple[np.ndarray, list[float]] | None:
        """(frames, their times in seconds) of `path` under `settings`, or None (never cached, or the entry was
        unreadable)."""
        entry = self.entry_path(self.key(path, settings))
        try:
            with np.load(entry, allow_pickle=False) as stored:
                frames, times = stored["frames"], stored["timestamps_s"].tolist()
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # cut short or corrupted: decode again, rewrite
            entry.unlink(missing_ok=True)
            self.misses += 1
            return None
        try:
            os.utime(entry)  # least recently used goes first, and a hit is a use
        except OSError:
            pass
        self.hits += 1
        return frames, times

    def put(self, path: str | os.PathLike, settings: dict[str, Any], frames: np.ndarray, timestamps_s: list[float]) -> Path | None:
        """Store frames and their times; returns the entry, or None when the folder cannot be written (reported
        once, never fatal)."""
        entry = self.entry_path(self.key(path, settings))
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".writing-", suffix=_SUFFIX)
            try:
                with os.fdopen(handle, "wb") as stream:
                    np.savez(stream, frames=np.ascontiguousarray(frames), timestamps_s=np.asarray(timestamps_s, dtype=np.float64))
                os.replace(temporary, entry)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            if not self._unwritable_reported:
                self._unwritable_reported = True
                print(f"frame cache {self.folder} is not writable ({plain_reason(error)}); clips are decoded every time", file=sys.stderr, flush=True)
            return None
        self._account(entry.stat().st_size)
        return entry

    # ------------------------------------------------------------------------------------------ the bound
    def entries(self) -> list[Path]:
        return [path for path in self.folder.glob(f"??/*{_SUFFIX}") if not path.name.startswith(".writing-")]

    def size_bytes(self) -> int:
        """Bytes the entries take now (entries removed meanwhile by another process are not counted)."""
        total = 0
        for entry in self.entries():
            try:
                total += entry.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def _account(self, written: int) -> None:
        self._writes_since_scan += 1
        if self._size is None or self._writes_since_scan >= _RESCAN_EVERY:
            self._size, self._writes_since_scan = self.size_bytes(), 0
        else:
            self._size += written
        if self._size > self.max_bytes:
            self._size = self.evict(int(self.max_bytes * 0.9))

    def evict(self, target_bytes: int) -> int:
        """Remove least recently used entries until the folder holds at most `target_bytes`; returns its size."""
        stats = []
        for entry in self.entries():
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            stats.append((stat.st_mtime_ns, stat.st_size, entry))
        total = sum(size for _, size, _ in stats)
        for _, size, entry in sorted(stats, key=lambda item: item[0]):
            if total <= target_bytes:
                break
            entry.unlink(missing_ok=True)
            total -= size
        return total
