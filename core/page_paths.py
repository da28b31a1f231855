"""Which files and folders a config from the page may name: only those inside the data and runs folders.

The box is shared and the page is reachable by people who do not own it; the command line is its owner's and keeps
full paths. A path typed on the page would otherwise make the trainer read any file the app can read (a schema
file pointed at ~/.cache/huggingface/token) or write where it should not (a frame cache). Every path is checked
after following links (`os.path.realpath`), so a link inside the data folder that leads out of it is refused too.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from core.hub import _HUB_ID
from core.runs import runs_root
from core.tiny import TINY_PREFIX

# Every config field that names a file or folder, for both recipes; a field a recipe lacks is skipped. A curriculum
# stage's `data` overrides are checked under the same `data.` names.
PATH_FIELDS = (
    "model.name",
    "data.root",
    "data.schema_file",
    "data.frame_cache_dir",
    "warm_start.jsonl",
    "pairs.file",
    "pairs.source_run",
)


def data_dir() -> Path:
    """Where datasets live: `VLM_DATA_DIR`, else `data/` under the working directory (absolute)."""
    return Path(os.environ.get("VLM_DATA_DIR", "data")).expanduser().resolve()


def page_roots() -> tuple[Path, ...]:
    """The folders a page's paths may lead into: the data folder and the runs folder, links followed."""
    return tuple(dict.fromkeys(Path(os.path.realpath(root)) for root in (data_dir(), runs_root())))


def is_local_model(name: str) -> bool:
    """Whether `model.name` names a folder on this box rather than a Hub id or a tiny model, as the loader decides
    (core.hub.check_model_available): an existing folder, or anything not shaped like `org/name`.

    >>> is_local_model("Qwen/Qwen2.5-VL-7B-Instruct"), is_local_model("tiny:qwen2_5_vl"), is_local_model("~/models/x")
    (False, False, True)
    """
    if name.startswith(TINY_PREFIX):
        return False
    return Path(name).expanduser().is_dir() or not _HUB_ID.match(name)


def path_values(cfg: BaseModel) -> list[tuple[str, str]]:
    """(dotted field, value) for each path field that `cfg` sets, curriculum stages' data overrides included."""
    values = cfg.model_dump(mode="json")
    found = []
    for field in PATH_FIELDS:
        section, key = field.split(".")
        value = (values.get(section) or {}).get(key)
        if isinstance(value, str) and value and (field != "model.name" or is_local_model(value)):
            found.append((field, value))
    for stage in values.get("stages") or []:
        overrides = stage.get("data") or {}
        for field in PATH_FIELDS:
            section, key = field.split(".")
            if section == "data" and isinstance(overrides.get(key), str) and overrides[key]:
                found.append((f"stages.{stage.get('name')}.{field}", overrides[key]))
    return found


def within(path: str, roots: tuple[Path, ...]) -> bool:
    """Whether an absolute, normalised `path` is one of `roots` or inside one."""
    return any(Path(path) == root or Path(path).is_relative_to(root) for root in roots)


def page_path_problems(cfg: BaseModel, roots: tuple[Path, ...] | None = None) -> list[str]:
    """One line per path field of `cfg` that leads outside the data and runs folders; empty when all stay inside.

    A relative path is taken against the working folder, as the trainer the page launches takes it.

    >>> from core.config import PairsSection
    >>> class Config(BaseModel):
    ...     pairs: PairsSection
    >>> page_path_problems(Config(pairs=PairsSection(file="/etc/passwd")), roots=(Path("/app/data"), Path("/app/runs")))
    ['pairs.file: /etc/passwd is outside the folders the page may use (/app/data, /app/runs)']
    """
    roots = page_roots() if roots is None else roots
    return [problem for field, value in path_values(cfg) if (problem := path_problem(field, value, roots))]


def path_problem(field: str, value: str, roots: tuple[Path, ...] | None = None) -> str | None:
    """The line that refuses one page path `value` of `field` leading outside the data and runs folders, else None.

    >>> path_problem("data.schema_file", "/etc/passwd", roots=(Path("/app/data"),))
    'data.schema_file: /etc/passwd is outside the folders the page may use (/app/data)'
    """
    roots = page_roots() if roots is None else roots
    written = os.path.abspath(os.path.expanduser(value))
    if within(os.path.realpath(written), roots):
        return None
    # Named, so that the owner of a link inside the data folder knows why a path that looks inside is refused.
    link = " (through a link that leads out of them)" if within(written, roots) else ""
    return f"{field}: {value} is outside the folders the page may use ({', '.join(str(root) for root in roots)}){link}"
