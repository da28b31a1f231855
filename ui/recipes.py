"""What the UI needs to know about each recipe, and the jobs it starts: training, resuming, evaluating.

Nothing here imports Streamlit, so tests call it directly. Everything the UI shows about a run still comes
from the run folder (core/runs.py); this module only starts the recipes' command lines and finds files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from core.config import ConfigError, read_yaml, redact_secrets, to_yaml, validate_config
from core.launch import launch_cli, launch_training
from core.page_paths import data_dir, page_path_problems
from core.runs import RunDir, form_values_path, list_runs, runs_root, unique_run_dir
from image_vlm.config import ImageConfig
from video_vlm.config import VideoConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
ACTIVE = ("starting", "running", "stopping")
RESUMABLE = ("stopped", "crashed")


@dataclass(frozen=True)
class Recipe:
    """One fine-tuning recipe as the UI sees it.

    Attributes:
        name: Run-id prefix and page name ("image" or "video").
        title: Page title.
        config_cls: The recipe's typed config.
        train_module / eval_module: The CLIs the UI launches (`python -m ...`).
        estimate_module: The recipe's memory estimate (`estimate(cfg)`), shown beside Start.
        configs_dir: Shipped YAML presets.
        primary: Config keys shown in the main form; every other field goes under "All settings". A key the
            recipe's config lacks is skipped, so one list serves a config before and after it gains a field.
        upload_suffixes: File types accepted in the compare panel.
        upload_limit_mb: Largest accepted upload.
        grpo: Whether the trainer writes rollouts (GRPO) worth a table.
    """

    name: str
    title: str
    config_cls: type[BaseModel]
    train_module: str
    eval_module: str
    estimate_module: str
    configs_dir: Path
    primary: tuple[str, ...]
    upload_suffixes: tuple[str, ...]
    upload_limit_mb: int
    grpo: bool


COMMON_PRIMARY = (
    "model.name",
    "method",
    "finetune.method",
    "finetune.r",
    "finetune.alpha",
    "finetune.vision_attention",
    "finetune.vision_mlp",
    "finetune.language_attention",
    "finetune.language_mlp",
    "train.max_steps",
    "train.num_train_epochs",
    "train.per_device_train_batch_size",
    "train.gradient_accumulation_steps",
    "train.learning_rate",
    "train.optim",
)

# Main-form keys that matter under one training `method` only: the form shows them beside the others when that
# method is picked, and under "All other settings" otherwise. The pairs and DPO sections are core's, shared by
# both recipes.
METHOD_PRIMARY = {
    "dpo": (
        "pairs.samples_per_prompt",
        "pairs.temperature",
        "pairs.file",
        "pairs.source_run",
        "dpo.max_steps",
        "dpo.learning_rate",
        "dpo.beta",
        "dpo.per_device_train_batch_size",
    ),
}

IMAGE = Recipe(
    name="image",
    title="Image VLM",
    config_cls=ImageConfig,
    train_module="image_vlm.train",
    eval_module="image_vlm.evaluate",
    estimate_module="image_vlm.estimate",
    configs_dir=REPO_ROOT / "image_vlm" / "configs",
    primary=COMMON_PRIMARY + ("train.num_generations", "train.max_completion_length", "rewards.weights"),
    upload_suffixes=(".jpg", ".jpeg", ".png", ".webp"),
    upload_limit_mb=20,
    grpo=True,
)

VIDEO = Recipe(
    name="video",
    title="Video VLM",
    config_cls=VideoConfig,
    train_module="video_vlm.train",
    eval_module="video_vlm.evaluate",
    estimate_module="video_vlm.estimate",
    configs_dir=REPO_ROOT / "video_vlm" / "configs",
    primary=COMMON_PRIMARY + ("data.num_frames", "data.frame_max_side"),
    upload_suffixes=(".mp4", ".mov", ".webm"),
    upload_limit_mb=200,
    grpo=False,
)

RECIPES = {recipe.name: recipe for recipe in (IMAGE, VIDEO)}


# ---------------------------------------------------------------------------------------------- folders


def resolve_data_root(root: str, home: Path | None = None) -> str:
    """An absolute dataset folder for a config's `data.root`.

    Presets name their data as `data/<name>`; that maps onto `VLM_DATA_DIR/<name>` (`home`), so a
    container's data volume and the tests' temporary folders work with the shipped YAMLs. The trainer gets
    an absolute path and so does not depend on its working directory.

    >>> resolve_data_root("data/wildfire", home=Path("/srv/data"))
    '/srv/data/wildfire'
    >>> resolve_data_root("/elsewhere/set", home=Path("/srv/data"))
    '/elsewhere/set'
    """
    path = Path(root).expanduser()
    if path.is_absolute():
        return str(path)
    parts = path.parts
    if parts and parts[0] == "data":
        return str((home or data_dir()).joinpath(*parts[1:]))
    return str(path.resolve())


def dataset_folders() -> list[Path]:
    """Visible sub-folders of the data folder, sorted by name."""
    root = data_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


# ---------------------------------------------------------------------------------------------- presets


def presets(recipe: Recipe) -> dict[str, Path | None]:
    """Label -> YAML file for each shipped config that validates; the tiny one first.

    Files in the configs folder that are not recipe configs (a schema example, say) are left out. Without
    any shipped YAML the recipe's defaults are offered.
    """
    found: dict[str, Path | None] = {}
    files = sorted(recipe.configs_dir.glob("*.yaml")) if recipe.configs_dir.is_dir() else []
    files.sort(key=lambda p: (not p.stem.startswith("tiny"), p.stem != "tiny", p.stem))
    for path in files:
        try:
            validate_config(recipe.config_cls, read_yaml(path), source=str(path))
        except ConfigError:
            continue
        found[preset_label(path.stem)] = path
    if not found:
        found["defaults"] = None
    return found


def preset_label(stem: str) -> str:
    """The preset picker's label for a shipped YAML: the tiny ones (CPU, a local random-weight model) say so.

    >>> preset_label("tiny"), preset_label("tiny_dpo"), preset_label("qwen2_5_vl_7b_grpo")
    ('tiny (local test model, CPU, ~3 min, visibly learns)', 'tiny_dpo (local test model, CPU, a few min: pairs, then DPO)', 'full-size: qwen2_5_vl_7b_grpo')
    """
    if stem == "tiny":
        return "tiny (local test model, CPU, ~3 min, visibly learns)"
    if stem == "tiny_dpo":
        return "tiny_dpo (local test model, CPU, a few min: pairs, then DPO)"
    if stem.startswith("tiny"):
        return f"{stem} (local test model, CPU)"
    return f"full-size: {stem}"


def preset_values(recipe: Recipe, path: Path | None) -> dict[str, Any]:
    """The preset as a plain dict of sections, with the dataset folder made absolute."""
    data = read_yaml(path) if path else {}
    cfg = validate_config(recipe.config_cls, data, source=str(path or "defaults"))
    values = cfg.model_dump(mode="json")
    values["data"]["root"] = resolve_data_root(values["data"]["root"])
    return values


# ---------------------------------------------------------------------------------------------- saved form


def saved_form_path(recipe: Recipe) -> Path:
    """The form's last values, one small file per recipe under the runs folder, so a reload keeps them."""
    return form_values_path(recipe.name)


def save_form(recipe: Recipe, preset: str, values: dict[str, Any]) -> None:
    """Remember a validated config (as sections) and the preset it was made from, secrets left out; a failed write
    is harmless."""
    path = saved_form_path(recipe)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(yaml.safe_dump({"preset": preset, "config": redact_secrets(values)}, sort_keys=False))
        os.replace(tmp, path)
    except OSError:
        pass


def saved_form(recipe: Recipe) -> tuple[str, dict[str, Any]] | None:
    """(preset label, config sections) last saved for this recipe; None when there is none or it no longer
    validates (a config field that changed since)."""
    try:
        data = yaml.safe_load(saved_form_path(recipe).read_text())
        cfg = validate_config(recipe.config_cls, data["config"], source=str(saved_form_path(recipe)))
        return str(data["preset"]), cfg.model_dump(mode="json")
    except (OSError, yaml.YAMLError, KeyError, TypeError, ConfigError):
        return None


def has_gpu() -> bool:
    """A cheap check (no torch import) for an NVIDIA GPU, to pick the default preset."""
    return Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir())


def default_preset(labels: list[str]) -> str:
    """Full-size on a GPU machine, tiny elsewhere."""
    if has_gpu():
        for label in labels:
            if label.startswith("full-size"):
                return label
    return labels[0]


# ---------------------------------------------------------------------------------------------- runs


def recipe_of(run: RunDir) -> Recipe | None:
    """The recipe that made a run: from its id prefix, else from the shape of its config."""
    prefix = run.id.split("-", 1)[0]
    if prefix in RECIPES:
        return RECIPES[prefix]
    try:
        config = run.read_config()
    except (OSError, ValueError):
        return None
    if "rewards" in config:
        return IMAGE
    if "stages" in config or "num_frames" in (config.get("data") or {}):
        return VIDEO
    return None


def served_recipe() -> Recipe | None:
    """The recipe this server is for (VLM_PAGE=image|video, one per container), None when it serves both."""
    return RECIPES.get(os.environ.get("VLM_PAGE", "").strip().lower())


def recipe_runs(recipe: Recipe, root: Path | None = None) -> list[RunDir]:
    """This recipe's runs, newest first."""
    return [run for run in list_runs(root or runs_root()) if recipe_of(run) is recipe]


def default_run(runs: list[RunDir]) -> RunDir | None:
    """The run a freshly opened page shows: the newest active one, else the newest one."""
    for run in runs:
        if run.read_status().get("state") in ACTIVE:
            return run
    return runs[0] if runs else None


def artifact_of(run: RunDir) -> Path | None:
    """The weights to compare or evaluate (RunDir.newest_weights); None also when the folder vanishes mid-read."""
    try:
        return run.newest_weights()
    except OSError:
        return None


def start_training(recipe: Recipe, cfg: BaseModel) -> tuple[RunDir, subprocess.Popen]:
    """Launch a new run of `cfg` in the background; it reads `starting` before this returns.

    The form's config goes to `<run>/launch.yaml`; the CLI writes the resolved `config.yaml` itself. Whoever
    reaches the page may not own the box, so every file and folder the config names must lie inside the data or
    runs folder (core.page_paths); a resumed run reuses the config.yaml that was checked here.

    Raises:
        ConfigError: A path of the config leads outside those folders (one line per field); nothing was created.
        GpuBusy: Another job holds the GPU; nothing was created.
    """
    problems = page_path_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
    run = unique_run_dir(recipe.name)
    return run, launch_training(recipe.train_module, run, config_text=to_yaml(cfg))


def resume_training(recipe: Recipe, run: RunDir) -> subprocess.Popen:
    """Continue a stopped or crashed run from its latest checkpoint, with its own config.yaml.

    Raises:
        GpuBusy: Another job holds the GPU.
        RunError: The run is already starting or running (a second click).
        ConfigError: The run has no config.yaml.
    """
    if not run.config_path.exists():
        raise ConfigError(f"run {run.id} has no config.yaml, so it cannot be resumed")
    return launch_training(recipe.train_module, run, config_path=run.config_path)


def start_evaluation(recipe: Recipe, run: RunDir) -> subprocess.Popen:
    """Run the recipe's evaluation CLI on a run as a background job logging to `<run>/eval.log`.

    Raises:
        GpuBusy: Another job holds the GPU (the lock is taken here and handed to the job).
    """
    return launch_cli([sys.executable, "-m", recipe.eval_module, "--run", str(run.path)], run, run.eval_log_path,
                      kind="evaluation")


def tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last lines of a text file ('' when it is missing); progress-bar carriage returns become lines."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    rows = [row for row in data.replace("\r", "\n").split("\n") if row.strip()]
    return "\n".join(rows[-lines:])
