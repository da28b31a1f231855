"""The dataset folder on a recipe's page: the picker, its check (cached until the folder changes), and why a folder
cannot be trained on. The checks themselves are the recipes' own (`image_vlm.data`, `video_vlm.data`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from ui.recipes import IMAGE, Recipe, data_dir, dataset_folders


def dataset_picker(recipe: Recipe, base: dict[str, Any], prefix: str) -> Path:
    """Choose the dataset folder (the preset's, or any folder under the data folder) and show its check."""
    preset_root = Path(base["data"]["root"])
    choices = list(dict.fromkeys([preset_root, *dataset_folders()]))
    home = data_dir()

    def name(path: Path) -> str:
        shown = str(path.relative_to(home)) if path.is_relative_to(home) else str(path)
        return f"{shown} (preset)" if path == preset_root else shown

    root = st.selectbox(
        "Dataset folder",
        choices,
        format_func=name,
        key=f"{prefix}:dataset",
        help=f"Folders under the data folder ({home}, env VLM_DATA_DIR). Image: {{train,valid,test}}/<class>/; video: videos/ + metadata.jsonl.",
    )
    synthetic = bool(base["data"].get("synthetic")) and root == preset_root
    with st.expander("Dataset check", expanded=False):
        report = show_dataset_check(recipe, root, synthetic, base, prefix)
    if report and report.get("unsupervised"):
        supervised = [name for name in report["fields"] if name not in report["unsupervised"]]
        st.warning(
            f"This dataset labels only {', '.join(supervised) or 'no field'} ({len(supervised)} of {len(report['fields'])} fields): "
            f"{', '.join(report['unsupervised'])} are `unknown` in every clip, left out of the loss and the scores, "
            "so the tuned model learns nothing about them.",
            icon=":material/info:",
        )
    return root


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
    if recipe is IMAGE:
        from image_vlm.data import files_fingerprint

        # The manifest's own freshness stamp: it notices a file rewritten in place, which folder times miss.
        return check_image_dataset(str(root), (files_fingerprint(root),))
    return check_video_dataset(
        str(root), folder_stamp(root), cfg_data.get("val_fraction", 0.2), cfg_data.get("num_frames", 8), cfg_data.get("schema_file")
    )


def show_dataset_check(recipe: Recipe, root: Path, synthetic: bool, base: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    """Show the dataset's check; returns its report (None when there is none yet)."""
    if not root.exists():
        if synthetic:
            st.info(f"{root} does not exist yet: the trainer generates the synthetic dataset there on the first run.")
        else:
            st.error(f"{root}: dataset folder not found. {how_to_get(recipe, root)}")
        return None
    manifest = "manifest.json"
    if needs_button(root, manifest) and not st.button("Check this dataset (decodes every file once)", key=f"{prefix}:verify"):
        st.caption("Large folder without a manifest yet: the check runs on request (and when training starts).")
        return None
    report = dataset_report(recipe, root, base["data"])
    if report.get("error"):
        st.error(report["error"])
        return None
    if recipe is IMAGE:
        st.dataframe(pd.DataFrame(report["counts"]).T.rename_axis("split"), width="stretch")
        if report["excluded"]:
            st.warning(f"{len(report['excluded'])} unreadable image(s) left out")
            st.dataframe(pd.DataFrame(report["excluded"]), hide_index=True, width="stretch")
    else:
        (st.success if report["ok"] else st.error)(report["summary"])
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
