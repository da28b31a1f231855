"""Provenance: what made a run, kept in its folder as `provenance.json` (`RunDir.provenance_path`).

The trainer (rank 0) writes it when a launch starts and completes it when the launch ends, whatever the end
(`ended`, `state`): the code version, the model libraries, the machine, the data's manifest fingerprint, the
weights' resolved revision, the seed, the command and the config's hash. Evaluation copies its model and data
lines into its reports (`model_and_data`).

The data and the weights are read again at the end: a run verifies its data and downloads its weights after it
starts, so their fingerprint and commit are often known only then. A resumed run keeps each earlier launch's
document under `earlier_launches`.

Never a token and never an environment variable's value: whatever a secret variable holds is struck out of
the document before it is written, wherever it appears (an override on the command line, say).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.files import write_json_atomic
from core.processes import is_main_process, usable_cpus
from core.runs import ENDED_STATES, RunDir, now_iso
from core.tiny import TINY_PREFIX

SCHEMA_VERSION = 1
PACKAGE = "vlm-playbook"
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "torchao", "torchcodec")
# The file each recipe's `verify` writes into its data root; its `fingerprint` is what verify computed.
DATA_MANIFEST = "manifest.json"
REPO_ROOT = Path(__file__).resolve().parents[1]
GIT_TIMEOUT_S = 5.0
REDACTED = "<redacted>"
# Environment variables whose values are secrets (HF_TOKEN, WANDB_API_KEY, KAGGLE_KEY, VLM_UI_PASSWORD, ...).
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# ---------------------------------------------------------------------------------------------- the pieces


def code_version(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The git commit and dirty flag of the checkout this package runs from (None outside one), and the package's
    installed version."""
    commit = _git(root, "rev-parse", "HEAD")
    top = _git(root, "rev-parse", "--show-toplevel")
    # Only the package's own checkout counts: a package installed inside some other repository is not in one.
    if commit is None or top is None or Path(top).resolve() != root.resolve():
        commit = dirty = None
    else:
        changes = _git(root, "status", "--porcelain")
        dirty = None if changes is None else bool(changes)
    return {"git_commit": commit, "dirty": dirty, "package_version": installed_version(PACKAGE)}


def _git(root: Path, *args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def installed_version(package: str) -> str | None:
    """A distribution's installed version, or None when it is not installed.

    >>> installed_version("no-such-package-here") is None
    True
    """
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str | None]:
    """Each library's installed version; torch's as torch itself reports it, with its build tag (`2.9.0+cu130`),
    which says which CUDA it was built for and the package metadata leaves out."""
    versions = {name: installed_version(name) for name in names}
    if versions.get("torch"):
        try:
            import torch

            versions["torch"] = str(torch.__version__)
        except Exception:  # noqa: BLE001 - a torch that cannot import keeps its installed version
            pass
    return versions


def cpu_description() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one) and the cores this process may use."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                name = value.strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    cores = usable_cpus()
    return f"{name} ({cores} core{'s' if cores != 1 else ''})"


def gpu_description() -> dict[str, Any] | None:
    """The first GPU's name, how many there are, the driver and torch's CUDA; None without CUDA (or torch)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(), "driver": nvidia_driver(),
                "cuda": torch.version.cuda}
    except Exception:  # noqa: BLE001 - a broken CUDA setup is recorded as no GPU, never a failed run
        return None


def nvidia_driver() -> str | None:
    """The NVIDIA driver version as nvidia-smi reports it, or None where it cannot say."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def data_line(root: str | None) -> dict[str, Any]:
    """The data root and the fingerprint its `verify` recorded in the root's manifest (None where none is).

    The fingerprint is the recipe's own (the image recipe hashes every file's name, size and mtime); this only
    reads what verify wrote, so there is one hashing scheme.
    """
    fingerprint = None
    if root:
        try:
            recorded = json.loads((Path(root) / DATA_MANIFEST).read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if isinstance(recorded, str) and recorded:
            fingerprint = recorded if ":" in recorded else f"sha256:{recorded}"
    return {"root": root, "fingerprint": fingerprint}


def model_revision(name: str, revision: str | None = None, cache_dir: str | Path | None = None) -> str | None:
    """What weights `name` loads: "tiny" for a tiny kind, "local" for a folder, else the commit of the Hugging Face
    cache snapshot that `revision` (None: main) resolves to; None when it is not in the cache.

    >>> model_revision("tiny:qwen2_5_vl"), model_revision("/")
    ('tiny', 'local')
    """
    if name.startswith(TINY_PREFIX):
        return "tiny"
    if Path(name).expanduser().is_dir():
        return "local"
    if revision and _COMMIT.match(revision):
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        # The cache lays a model out as models--org--name/snapshots/<commit>/..., refs/<branch> naming the commit.
        found = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir, revision=revision)
    except Exception:  # noqa: BLE001 - an odd name or cache is an unknown revision, never a failed run
        return None
    if isinstance(found, str):
        commit = Path(found).parent.name
        return commit if _COMMIT.match(commit) else None
    return None


def model_line(config: dict[str, Any]) -> dict[str, Any]:
    model = config.get("model") or {}
    name = str(model.get("name") or "")
    return {"id": name, "revision": model_revision(name, model.get("revision")) if name else None}


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """The values of the environment's secret variables, longest first (short ones would strike out plain words).

    >>> secret_values({"HF_TOKEN": "hf_abcdefgh", "HOME": "/home/me", "WANDB_API_KEY": "x"})
    ['hf_abcdefgh']
    """
    environ = os.environ if environ is None else environ
    values = {value for key, value in environ.items() if _SECRET_NAME.search(key) and len(value) >= 6}
    return sorted(values, key=len, reverse=True)


def redact(value: Any, secrets: list[str]) -> Any:
    """`value` with every occurrence of each secret struck out, in every string it holds.

    >>> redact({"command": ["python", "x=hf_abcdefgh"]}, ["hf_abcdefgh"])
    {'command': ['python', 'x=<redacted>']}
    """
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {key: redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    return value


def launch_command() -> list[str]:
    """This process's command line as typed, with the interpreter's full path (`python -m image_vlm.train ...`)."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return [sys.executable, *argv[1:]]


# ---------------------------------------------------------------------------------------------- the document


def provenance_document(run: RunDir, config: dict[str, Any]) -> dict[str, Any]:
    """What made this launch of `run`, as the trainer records it at the start (`ended` and `state` still None)."""
    try:
        config_sha256 = hashlib.sha256(run.config_path.read_bytes()).hexdigest()
    except OSError:
        config_sha256 = None
    return {
        "schema": SCHEMA_VERSION,
        "code": code_version(),
        "libraries": library_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "gpu": gpu_description(),
        "data": data_line((config.get("data") or {}).get("root")),
        "model": model_line(config),
        "seed": (config.get("train") or {}).get("seed"),
        "command": launch_command(),
        "config_sha256": config_sha256,
        "started": now_iso(),
        "ended": None,
        "state": None,
    }


def read_provenance(run: RunDir) -> dict[str, Any] | None:
    """The run's provenance.json, or None when it has none (a run from before provenance) or it is unreadable."""
    try:
        document = json.loads(run.provenance_path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def model_and_data(run: RunDir) -> dict[str, Any] | None:
    """The model and data lines of the run's provenance, as evaluation copies them into a report; None without."""
    document = read_provenance(run)
    if document is None:
        return None
    return {"model": document.get("model"), "data": document.get("data")}


def write_provenance(run: RunDir, document: dict[str, Any]) -> bool:
    """Write the document with every secret struck out; a failed write is said on stderr, never raised: provenance
    never stops a run."""
    try:
        write_json_atomic(run.provenance_path, redact(document, secret_values()))
        return True
    except OSError as err:
        print(f"provenance: could not write {run.provenance_path}: {err}", file=sys.stderr, flush=True)
        return False


def start_provenance(run: RunDir, config: dict[str, Any]) -> dict[str, Any] | None:
    """Record what made this launch (rank 0 only; None on the other ranks). An earlier launch's document (a resumed
    run) is kept under `earlier_launches`."""
    if not is_main_process():
        return None
    document = provenance_document(run, config)
    earlier = read_provenance(run)
    if earlier is not None:
        document["earlier_launches"] = [*earlier.pop("earlier_launches", []), earlier]
    write_provenance(run, document)
    return document


def end_provenance(run: RunDir, document: dict[str, Any] | None) -> None:
    """Complete this launch's document: its end time and state (from status.json), and the data fingerprint and
    weights' revision as known now, after training verified the data and loaded the weights."""
    if document is None or not is_main_process():
        return
    state = run.read_status().get("state")
    config = {"data": {"root": document["data"]["root"]}, "model": {"name": document["model"]["id"]}}
    try:
        config = run.read_config()
    except Exception:  # noqa: BLE001 - the start's lines stay when the config cannot be read again
        pass
    data, model = data_line((config.get("data") or {}).get("root")), model_line(config)
    document = {
        **document,
        "data": data if data["fingerprint"] else document["data"],
        "model": model if model["revision"] else document["model"],
        "ended": now_iso(),
        "state": state if state in ENDED_STATES else None,
    }
    write_provenance(run, document)
