"""The dataset folder on a recipe's page: the picker, its check (cached until the folder changes), and why a folder
cannot be trained on. The checks themselves are the recipes' own (`image_vlm.data`, `video_vlm.data`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.page_paths import path_problem
from ui.recipes import IMAGE, Recipe, data_dir, dataset_folders


def dataset_key(prefix: str) -> str:
    """The dataset picker's session-state key (a loaded run config sets it too)."""
    return f"{prefix}:dataset"


def dataset_kind(folder: Path) -> str | None:
    """Which recipe a folder holds data for, by its layout: `video` (videos/ or metadata.jsonl), `image` (a
    train/valid/test split folder), or None (empty, or something else).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "clips" / "videos").mkdir(parents=True); (Path(tmp) / "tiles" / "train").mkdir(parents=True)
    ...     dataset_kind(Path(tmp) / "clips"), dataset_kind(Path(tmp) / "tiles"), dataset_kind(Path(tmp))
    ('video', 'image', None)
    """
    from image_vlm.data import SPLITS

    try:
        if (folder / "videos").is_dir() or (folder / "metadata.jsonl").is_file():
            return "video"
        if any((folder / split).is_dir() for split in SPLITS):
            return "image"
    except OSError:
        pass
    return None


def recipe_datasets(recipe: Recipe) -> list[Path]:
    """The folders under the data folder that hold this recipe's kind of dataset."""
    return [folder for folder in dataset_folders() if dataset_kind(folder) == recipe.name]


def typed_folder(text: str, home: Path) -> tuple[Path, str | None]:
    """(folder, why it cannot be used) for a path typed into the picker: relative to the data folder, and inside it
    once links are followed (the page is reachable by others: it reads no folder outside the data folder).

    >>> typed_folder("sets/a", Path("/srv/data"))
    (PosixPath('/srv/data/sets/a'), None)
    >>> typed_folder("/etc", Path("/srv/data"))[1]
    'Dataset folder /etc: outside the data folder /srv/data (env VLM_DATA_DIR); put or link the dataset there'
    """
    path = Path(text.strip()).expanduser()
    path = path if path.is_absolute() else home / path
    if not path.resolve().is_relative_to(home.resolve()):
        return path, (f"Dataset folder {text.strip()}: outside the data folder {home} (env VLM_DATA_DIR); "
                      "put or link the dataset there")
    return path, None


def dataset_picker(recipe: Recipe, base: dict[str, Any], prefix: str) -> tuple[Path, str | None]:
    """Choose the dataset folder (the preset's, one of this recipe's under the data folder, or a typed path) and say
    beside it what is wrong with it; the full check sits in an expander below. Returns (folder, why it cannot be
    trained on, or None)."""
    preset_root = Path(base["data"]["root"])
    home = data_dir()
    key = dataset_key(prefix)
    held = st.session_state.get(key)
    known = [str(p) for p in dict.fromkeys([preset_root, *recipe_datasets(recipe)])]
    choices = known if not held or str(held) in known else [known[0], str(held), *known[1:]]

    def name(path: str) -> str:
        folder = Path(path) if Path(path).is_absolute() else home / path  # a typed relative path is the data folder's
        shown = str(folder.relative_to(home)) if folder.is_relative_to(home) else path
        marks = (["preset"] if folder == preset_root else []) + ([] if folder.exists() else ["missing"])
        return f"{shown} ({', '.join(marks)})" if marks else shown

    chosen = st.selectbox(
        "Dataset folder",
        choices,
        format_func=name,
        key=key,
        accept_new_options=True,
        help=f"This recipe's datasets under the data folder ({home}, env VLM_DATA_DIR), or type a folder in it. "
        + ("Image: {train,valid,test}/<class>/." if recipe is IMAGE else "Video: videos/ + metadata.jsonl."),
    )
    chosen = str(chosen or preset_root)
    root, problem = (Path(chosen), None) if chosen in known else typed_folder(chosen, home)
    synthetic = bool(base["data"].get("synthetic")) and root == preset_root
    report = None
    if problem is None:
        problem = folder_problem(recipe, root, synthetic)
    if problem is None and root.exists():
        with st.expander("Dataset check", expanded=False):
            report = show_dataset_check(recipe, root, base, prefix)
        if report and report.get("error"):
            problem = report["error"]
        elif report and recipe is not IMAGE and not report.get("ok"):
            problem = f"{root}: no usable clips ({report['summary']})"
    if problem:
        st.error(problem, icon=":material/folder_off:")
    elif synthetic and not root.exists():
        st.caption(f"{name(str(root))}: the trainer generates the synthetic dataset there on the first run.")
    if report and report.get("unsupervised"):
        supervised = [name for name in report["fields"] if name not in report["unsupervised"]]
        st.warning(
            f"This dataset labels only {', '.join(supervised) or 'no field'} ({len(supervised)} of {len(report['fields'])} fields): "
            f"{', '.join(report['unsupervised'])} are `unknown` in every clip, left out of the loss and the scores, "
            "so the tuned model learns nothing about them.",
            icon=":material/info:",
        )
    return root, problem


def folder_problem(recipe: Recipe, root: Path, synthetic: bool) -> str | None:
    """Why a folder is no dataset for this recipe, judged from its layout alone (the full check comes after)."""
    if not root.exists():
        return None if synthetic else f"{root}: dataset folder not found. {how_to_get(recipe, root)}"
    if not root.is_dir():
        return f"{root}: not a folder"
    kind = dataset_kind(root)
    if kind is not None and kind != recipe.name:
        layout = "{train,valid,test}/<class>/ folders" if recipe is IMAGE else "videos/ and metadata.jsonl"
        return f"{root}: holds a {kind} dataset; this page trains on {recipe.name} datasets ({layout})"
    return None


def folder_stamp(root: Path) -> tuple[int, float]:
    """Changes when files are added to, removed from or changed in the folder's first two levels.

    The manifest that a check writes is left out, so writing it does not invalidate the check itself.
    """
    entries, stamps = 0, [0.0]
    try:
        for path in root.iterdir():
            if path.name.startswith((".", "manifest")):
                continue
            entries += 1
            stamps.append(path.stat().st_mtime)
            if path.is_dir():
                stamps.extend(p.stat().st_mtime for p in path.iterdir() if p.is_dir())
    except OSError:
        return (0, 0.0)
    return (entries, max(stamps))


@st.cache_data(max_entries=32, show_spinner="Checking the dataset…")
def check_image_dataset(root: str, stamp: tuple) -> dict[str, Any]:
    """Verify an image folder (decoding every file once; the manifest makes later checks instant)."""
    from image_vlm.data import DatasetError, load_manifest

    try:
        manifest = load_manifest(root, progress=False)
    except DatasetError as err:
        return {"error": str(err)}
    except OSError as err:
        return {"error": f"{root}: cannot be read ({err})"}
    return {
        "counts": manifest.counts,
        "excluded": manifest.excluded,
        "warnings": manifest.warnings,
        "held_out": manifest.held_out_split(),
    }


@st.cache_data(max_entries=32, show_spinner="Checking the clips…")
def check_video_dataset(root: str, stamp: tuple, val_fraction: float, num_frames: int, schema_file: str | None) -> dict[str, Any]:
    from video_vlm.data import verify_dataset

    try:
        report = verify_dataset(root, val_fraction, num_frames, schema=schema_file, progress=False)
    except (OSError, ValueError) as err:
        return {"error": f"{root}: {err}"}
    from video_vlm.schema import UNKNOWN

    train = sum(item.split == "train" for item in report.items)
    fields = list(dict.fromkeys(name for item in report.items for name in item.label))
    return {
        # Fields no clip labels (Nexar has only event_type): masked from the loss, so nothing learns them.
        "unsupervised": [name for name in fields if report.items and all(item.label.get(name, UNKNOWN) == UNKNOWN for item in report.items)],
        "fields": fields,
        "summary": report.summary(),
        "ok": report.ok,
        "counts": {"train": train, "val": len(report.items) - train},
        "problems": [p._asdict() for p in report.problems],
        "warnings": [w._asdict() for w in report.warnings],
    }


def needs_button(root: Path, manifest: str, limit: int = 3000) -> bool:
    """Big folders without a manifest are checked on request, not on every page load."""
    if (root / manifest).exists():
        return False
    count = 0
    for _ in root.rglob("*"):
        count += 1
        if count > limit:
            return True
    return False


def dataset_report(recipe: Recipe, root: Path, cfg_data: dict[str, Any]) -> dict[str, Any]:
    # The folder may come from a loaded config: it is listed only inside the data and runs folders, as Start requires.
    if problem := path_problem("data.root", str(root)):
        return {"error": problem}
    if recipe is IMAGE:
        from image_vlm.data import files_fingerprint

        # The manifest's own freshness stamp: it notices a file rewritten in place, which folder times miss.
        return check_image_dataset(str(root), (files_fingerprint(root),))
    schema_file = cfg_data.get("schema_file")
    # The schema file is typed on the page: it is opened only inside the data and runs folders, as Start requires.
    if schema_file and (problem := path_problem("data.schema_file", schema_file)):
        return {"error": problem}
    return check_video_dataset(
        str(root), folder_stamp(root), cfg_data.get("val_fraction", 0.2), cfg_data.get("num_frames", 8), schema_file
    )


def show_dataset_check(recipe: Recipe, root: Path, base: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    """Show an existing folder's check; returns its report (None when there is none yet). An error in the report is
    said beside the picker, not here."""
    manifest = "manifest.json"
    if needs_button(root, manifest) and not st.button("Check this dataset (decodes every file once)", key=f"{prefix}:verify"):
        st.caption("Large folder without a manifest yet: the check runs on request (and when training starts).")
        return None
    report = dataset_report(recipe, root, base["data"])
    if report.get("error"):
        st.caption("See the message under the dataset folder.")
        return report
    if recipe is IMAGE:
        st.dataframe(pd.DataFrame(report["counts"]).T.rename_axis("split"), width="stretch")
        if report["excluded"]:
            st.warning(f"{len(report['excluded'])} unreadable image(s) left out")
            st.dataframe(pd.DataFrame(report["excluded"]), hide_index=True, width="stretch")
    else:
        (st.success if report["ok"] else st.caption)(report["summary"])
        if report["problems"]:
            st.dataframe(pd.DataFrame(report["problems"]), hide_index=True, width="stretch")
    for warning in report.get("warnings", [])[:10]:
        st.caption(f":material/warning: {warning if isinstance(warning, str) else warning.get('message')}")
    return report


def how_to_get(recipe: Recipe, root: Path) -> str:
    """The recipe's own words on filling a dataset folder (the command and the credentials it needs)."""
    if recipe is IMAGE:
        from image_vlm.data import how_to_get_dataset
    else:
        from video_vlm.data import how_to_get_dataset
    return how_to_get_dataset(root)


def dataset_problem(recipe: Recipe, root: Path, cfg) -> str | None:
    """Why the dataset cannot be trained on, or None. A synthetic dataset that does not exist yet is fine."""
    if not root.exists():
        if cfg.data.synthetic:
            return None
        return f"dataset folder {root} not found. {how_to_get(recipe, root)}"
    report = dataset_report(recipe, root, cfg.data.model_dump())
    if report.get("error"):
        return f"the dataset failed verification: {report['error']}"
    if recipe is not IMAGE and not report.get("ok"):
        problems = "; ".join(p["message"] for p in report.get("problems", [])[:3])
        return f"the dataset has no usable clips ({problems or report['summary']})"
    return None
