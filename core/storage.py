"""Storage errors: which failed writes come from a full disk or a read-only folder, said in one line.

A trainer's checkpoint save or a status write that fails for lack of space must end the run with a message a
user can act on ("runs/x: no space left on device"), not a traceback from deep inside safetensors or torch.save.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}
# Libraries that write without passing the OSError on (safetensors, torch.save) still name the cause.
STORAGE_PATTERNS = {
    "no space left on device": "no space left on device",
    "storagefull": "no space left on device",
    "os error 28": "no space left on device",
    "read-only file system": "read-only file system",
    "readonlyfilesystem": "read-only file system",
    "os error 30": "read-only file system",
}


LOW_SPACE_BYTES = 16 * 2**20  # below this, a failed write is put down to the full disk


def storage_problem(err: BaseException, path: Path) -> str | None:
    """One line naming the path and cause when `err` comes from a full disk or a read-only folder, else None."""
    seen = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            where = current.filename or path
            return f"{where}: {STORAGE_ERRNOS[current.errno]}"
        text = str(current).lower().replace(" ", "") if current.args else ""
        for pattern, cause in STORAGE_PATTERNS.items():
            if pattern.replace(" ", "") in text:
                return f"{path}: {cause} ({str(current).splitlines()[0][:200]})"
        current = current.__cause__ or current.__context__
    # torch.save's zip writer says only "file write failed" or "unexpected pos"; the folder itself tells why.
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[-1][:200]
    if stats.f_flag & os.ST_RDONLY:
        return f"{path}: read-only file system ({first_line})"
    if stats.f_bavail * stats.f_frsize < LOW_SPACE_BYTES:
        return f"{path}: no space left on device ({first_line})"
    return None
