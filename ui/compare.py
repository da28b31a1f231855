"""The compare panel: a gallery sample or an upload, answered by the base model and the tuned one side by side.

Both answers come from one cached copy of the weights (`ui.compare_models`), streamed as they grow. The video
page also keeps an analytics table of this session's answers, one column per schema field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.config import ConfigError
from core.gpu_lease import GpuBusy
from core.media.errors import MediaError
from core.runs import RunDir
from ui.compare_models import (
    default_prompt,
    load_compare_model,
    run_config,
    split_image_answer,
    stream_answer,
    take_compare_lease,
)
from ui.recipes import ACTIVE, IMAGE, Recipe, artifact_of, recipe_runs
from ui.uploads import UploadError, describe_size, save_upload, upload_root
from ui.widgets import escape_markdown, select_trained_run, session, state_of, trained_runs

MAX_PROMPT_CHARS = 2000  # a question, not a document: the answer's token budget is eval.max_new_tokens


def compare_panel(recipe: Recipe) -> None:
    st.subheader("Compare base and tuned")
    runs = trained_runs(recipe)
    if not runs:
        waiting_for_weights(recipe)
        return
    run = select_trained_run(recipe, runs, "Adapter from run", f"{recipe.name}:compare-run")
    try:
        cfg = run_config(recipe, run)
    except (OSError, ConfigError) as err:
        st.error(f"Run {run.id} cannot be loaded: {err}")
        return

    # The picker, the prompt and Generate beside the media, which gets half the page (the playbook's own UI plays it
    # full width); the two answers below, across the page.
    left, right = st.columns(2, gap="large")
    prompt, clicked = "", False
    with left:
        media = media_picker(recipe, cfg)
        if media is not None:
            prompt, clicked = prompt_and_generate(recipe, cfg)
    with right:
        if media is None:
            st.caption("Pick a sample or upload a file to compare.")
        else:
            show_media(recipe, media)
    if media is not None:
        compare_outputs(recipe, run, cfg, media, prompt, clicked)
    if recipe is not IMAGE:
        analytics_table(recipe, cfg)


@st.fragment(run_every=5)
def waiting_for_weights(recipe: Recipe) -> None:
    """Nothing to compare yet. While a run trains this polls, and the page redraws with the run's first
    checkpoint as soon as it is saved (the rest of the page is not redrawn by the live run view)."""
    if trained_runs(recipe):
        st.rerun()
    training = [run for run in recipe_runs(recipe) if state_of(run) in ACTIVE]
    if training:
        st.info(
            f"Run {training[0].id} is training: its latest checkpoint appears here as soon as one is saved "
            "(every `logging.save_steps` steps)."
        )
    else:
        st.info("No adapter yet: finish or stop a training run first (a saved checkpoint is enough).")


def media_picker(recipe: Recipe, cfg) -> dict[str, Any] | None:
    """A gallery sample or an upload: {path, name, start, end, expected}, or None."""
    kind = "image" if recipe is IMAGE else "video"
    source = st.radio("Input", ["Gallery", "Upload"], horizontal=True, key=f"{recipe.name}:source")
    if source == "Upload":
        upload = st.file_uploader(
            f"Upload {'an image' if kind == 'image' else 'a video'} ({', '.join(s.lstrip('.') for s in recipe.upload_suffixes)}; "
            f"up to {recipe.upload_limit_mb} MB)",
            key=f"{recipe.name}:upload",
            max_upload_size=recipe.upload_limit_mb,
        )
        if upload is None:
            return None
        saved = cached_upload(recipe, upload)
        if isinstance(saved, str):
            st.error(saved)
            return None
        note = f"Uploaded {escape_markdown(upload.name)} ({describe_size(upload.size)})"
        st.caption(note + (f", saved as `{saved['name']}`" if saved["renamed"] else ""))
        media = {"path": saved["path"], "name": saved["name"], "start": None, "end": None, "expected": None}
    else:
        items = gallery(recipe, cfg)
        if not items:
            st.warning("No samples available; upload a file instead.")
            return None
        names = [item["name"] for item in items]
        chosen = st.selectbox("Sample", names, key=f"{recipe.name}:sample")
        media = items[names.index(chosen)]
        expected = media.get("expected")
        if isinstance(expected, dict):
            with st.expander("Expected answer (label)"):
                st.json(expected)
        elif expected is not None:
            st.caption(f"Expected: {expected}")
    return media


def cached_upload(recipe: Recipe, upload) -> dict[str, Any] | str:
    """Check and save an upload once per file (reruns reuse it); an error message string when refused."""
    cache = session("uploads", {})
    key = (recipe.name, upload.file_id, upload.name, upload.size)
    if key not in cache:
        try:
            saved = save_upload(
                upload.name,
                upload.getvalue(),
                recipe.upload_suffixes,
                recipe.upload_limit_mb,
                "image" if recipe is IMAGE else "video",
            )
            cache[key] = {"path": saved.path, "name": saved.name, "renamed": saved.renamed}
        except UploadError as err:
            cache[key] = f"Upload refused: {err}"
    return cache[key]


def show_media(recipe: Recipe, media: dict[str, Any]) -> None:
    """The image or clip, as wide as its column (a small image is scaled up, so a 128 px tile is still readable)."""
    try:
        with st.container(key=f"{recipe.name}-compare-media"):
            if recipe is IMAGE:
                st.image(str(media["path"]), caption=media["name"], width="stretch")
            else:
                st.video(str(media["path"]), start_time=int(media.get("start") or 0), width="stretch")
                st.caption(media["name"])
    except Exception as err:  # noqa: BLE001 - a preview failure must not hide the compare button
        st.caption(f"(no preview: {err})")


def synthetic_samples(recipe_name: str) -> Path:
    """The generated gallery samples, made again if someone cleaned the temporary folder."""
    root = str(upload_root())
    folder = make_synthetic_samples(recipe_name, root)
    if not any(folder.glob("*.png")) and not (folder / "metadata.jsonl").exists():
        make_synthetic_samples.clear()
        folder = make_synthetic_samples(recipe_name, root)
    return folder


@st.cache_resource(show_spinner="Preparing sample inputs…")
def make_synthetic_samples(recipe_name: str, upload_folder: str) -> Path:
    """A few generated samples for the gallery when no dataset has a held-out split (made once per server, in its
    private upload folder)."""
    folder = Path(upload_folder) / f"samples-{recipe_name}"
    if recipe_name == IMAGE.name:
        import numpy as np

        from image_vlm.synthetic import terrain_tile

        rng = np.random.default_rng(7)
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(6):
            fire = index % 2 == 0
            terrain_tile(rng, size=128, fire=fire).save(folder / f"{'wildfire' if fire else 'nowildfire'}_{index}.png")
    else:
        from video_vlm.synthetic import make_synthetic_dataset

        make_synthetic_dataset(folder, n=6, seed=7)
    return folder


def gallery(recipe: Recipe, cfg) -> list[dict[str, Any]]:
    """Held-out samples of the run's dataset when it has them, else generated samples."""
    try:
        return image_gallery(cfg) if recipe is IMAGE else video_gallery(cfg)
    except Exception as err:  # noqa: BLE001 - a broken dataset folder should not break the panel
        st.caption(f"Gallery unavailable ({err}); upload a file instead.")
        return []


def image_gallery(cfg, limit: int = 12) -> list[dict[str, Any]]:
    from image_vlm.data import ImageManifest, balanced_sample

    root = Path(cfg.data.root)
    manifest_file = root / "manifest.json"
    if manifest_file.is_file():
        try:
            manifest = ImageManifest.from_json(root, json.loads(manifest_file.read_text()))
            split = "test" if "test" in manifest.splits else manifest.held_out_split()
            if split:
                items = balanced_sample(manifest.split(split), limit, seed=0)
                return [
                    {"path": path, "name": f"{split}/{label}/{path.name}", "start": None, "end": None,
                     "expected": cfg.data.labels.get(label, label)}
                    for path, label in items
                ]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    folder = synthetic_samples(IMAGE.name)
    return [
        {"path": path, "name": f"synthetic/{path.name}", "start": None, "end": None,
         "expected": "Yes" if path.name.startswith("wildfire") else "No"}
        for path in sorted(folder.glob("*.png"))
    ]


def video_gallery(cfg, limit: int = 12) -> list[dict[str, Any]]:
    from video_vlm.data import load_manifest

    root = Path(cfg.final_data.root)
    try:
        items = load_manifest(root, split="val")[:limit]
    except (OSError, ValueError, KeyError, TypeError):
        items = []
    if items:
        return [
            {"path": item.video_path(root), "name": f"val/{Path(item.video).name}", "start": item.start_s,
             "end": item.end_s, "expected": item.label}
            for item in items
        ]
    folder = synthetic_samples("video")
    samples = []
    for line in (folder / "metadata.jsonl").read_text().splitlines():
        record = json.loads(line)
        video = record.pop("video")
        samples.append({"path": folder / video, "name": f"synthetic/{Path(video).name}", "start": None, "end": None,
                        "expected": record})
    return samples


def prompt_and_generate(recipe: Recipe, cfg) -> tuple[str, bool]:
    """The optional prompt box beside Generate: (the prompt, stripped; whether Generate was clicked)."""
    ask, go = st.columns([3, 1], vertical_alignment="bottom")
    with ask:
        prompt = st.text_input(
            "Prompt (optional)",
            key=f"{recipe.name}:prompt",
            max_chars=MAX_PROMPT_CHARS,
            placeholder="Empty: the recipe's own prompt",
            help="Asked of both models in place of the recipe's own prompt:\n\n" + recipe_prompt(recipe, cfg),
        )
    with go:
        clicked = st.button("Generate", type="primary", key=f"{recipe.name}:generate", width="stretch")
    return prompt.strip(), clicked


def compare_outputs(recipe: Recipe, run: RunDir, cfg, media: dict[str, Any], prompt: str, clicked: bool) -> None:
    """Generate shows base and tuned side by side, streaming; the last results stay on screen."""
    results_key = f"{recipe.name}:compare"
    identity = (run.id, str(media["path"]), media.get("start"), prompt)
    columns = st.columns(2, gap="medium")
    titles = {"base": "Base model", "tuned": f"Tuned · {run.id}"}
    if clicked:
        texts = generate_pair(recipe, run, cfg, media, columns, titles, prompt or None)
        if texts is not None:
            st.session_state[results_key] = {"identity": identity, **texts}
            if recipe is not IMAGE:
                add_analytics_rows(recipe, cfg, run, media, texts, prompt)
        return
    previous = st.session_state.get(results_key)
    if previous and previous["identity"] == identity:
        for column, side in zip(columns, ("base", "tuned")):
            with column, st.container(key=f"{recipe.name}-answer-{side}", border=True):
                st.markdown(f"**{titles[side]}**")
                render_answer(recipe, cfg, previous[side])


def recipe_prompt(recipe: Recipe, cfg) -> str:
    """The recipe's own prompt, quoted for the prompt box's help (or why it cannot be shown)."""
    try:
        text = default_prompt(recipe, cfg)
    except (OSError, ValueError, ImportError) as err:
        return f"(the recipe's prompt cannot be read: {err})"
    return "\n".join(f"> {escape_markdown(line)}" if line else ">" for line in text.splitlines())


def generate_pair(recipe: Recipe, run: RunDir, cfg, media: dict[str, Any], columns, titles,
                  prompt: str | None = None) -> dict[str, str] | None:
    try:
        with st.spinner("Taking the GPU for the compare view…"):
            take_compare_lease(run.id)
    except GpuBusy as err:
        st.error(f"{err}; compare when it is done.")
        return None
    artifact = artifact_of(run)
    if artifact is None or not run.exists():
        st.error(f"Run {run.id} has no weights any more (its folder was deleted or emptied).")
        return None
    try:
        with st.spinner(f"Loading {cfg.model.name} with the adapter from {run.id}…"):
            loaded = load_compare_model(recipe.name, run.id, str(run.path), str(artifact), artifact.stat().st_mtime)
        if recipe is IMAGE:
            from ui.compare_models import image_messages

            messages = image_messages(cfg, Path(media["path"]), prompt)
        else:
            from ui.compare_models import video_messages

            messages = video_messages(cfg, Path(media["path"]), media.get("start"), media.get("end"), prompt)
    except (MediaError, ConfigError, OSError, ValueError, ImportError, RuntimeError) as err:
        st.error(f"Cannot generate: {err}")
        return None
    texts = {}
    for column, side in zip(columns, ("base", "tuned")):
        with column, st.container(key=f"{recipe.name}-answer-{side}", border=True):
            st.markdown(f"**{titles[side]}**")
            box = st.empty()
            text = ""
            try:
                for text in stream_answer(loaded, messages, use_adapter=side == "tuned"):
                    box.code(text or "…", language=None, wrap_lines=True)
            except Exception as err:  # noqa: BLE001 - generation errors (OOM, bad input) become a message
                box.error(f"Generation failed: {type(err).__name__}: {err}")
                return None
            texts[side] = text
            with box.container():
                render_answer(recipe, cfg, text)
    return texts


def render_answer(recipe: Recipe, cfg, text: str) -> None:
    if recipe is IMAGE:
        parts = split_image_answer(text)
        if parts["solution"] is not None:
            st.markdown(f"Answer: **{escape_markdown(parts['solution'])}**")
        else:
            st.markdown("Answer: _none_: no `<SOLUTION>` block in the output")
        if parts["reasoning"]:
            with st.expander("Reasoning"):
                st.write(escape_markdown(parts["reasoning"]))
        with st.expander("Raw output"):
            st.code(text or "(empty)", language=None, wrap_lines=True)
        return
    result = parse_video_answer(cfg, text)
    if result is None:
        st.code(text or "(empty)", language=None, wrap_lines=True)
        return
    if result.valid:
        st.badge("schema-valid", color="green", icon=":material/check:")
        st.json(result.value)
    else:
        st.badge("not schema-valid", color="red", icon=":material/close:")
        st.caption(result.error or "")
        if result.parsed is not None:
            st.json(result.parsed)
    with st.expander("Raw output"):
        st.code(text or "(empty)", language=None, wrap_lines=True)


def parse_video_answer(cfg, text: str):
    try:
        from video_vlm.schema import load_schema

        return load_schema(cfg.final_data.schema_file).parse_output(text)
    except (ImportError, OSError, ValueError):
        return None


def add_analytics_rows(recipe: Recipe, cfg, run: RunDir, media: dict[str, Any], texts: dict[str, str],
                       prompt: str = "") -> None:
    rows = session(f"{recipe.name}:analytics", [])
    for side in ("base", "tuned"):
        result = parse_video_answer(cfg, texts[side])
        value = (result.value if result and result.valid else (result.parsed if result else None)) or {}
        row = {"clip": media["name"], "model": side, "run": run.id, "schema_valid": bool(result and result.valid)}
        if prompt:  # an answer to another question than the schema's: the table says which
            row["prompt"] = prompt
        for name, field_value in value.items():
            row[name] = ", ".join(map(str, field_value)) if isinstance(field_value, list) else field_value
        rows.append(row)


def analytics_table(recipe: Recipe, cfg) -> None:
    """Every answer generated in this session, one row each, with the schema's fields as columns."""
    rows = session(f"{recipe.name}:analytics", [])
    st.markdown("**Analytics table** (this session's answers)")
    try:
        from video_vlm.schema import load_schema

        fields = load_schema(cfg.final_data.schema_file).field_names
    except (ImportError, OSError, ValueError):
        fields = []
    columns = ["clip", "model", "run", "schema_valid", *fields]
    frame = pd.DataFrame(rows, columns=list(dict.fromkeys(columns + [k for r in rows for k in r])))
    st.dataframe(frame, hide_index=True, width="stretch", key=f"{recipe.name}:analytics-table")
    left, right = st.columns(2)
    with left:
        st.download_button(
            "Download CSV", frame.to_csv(index=False), file_name="video_analytics.csv", mime="text/csv",
            disabled=not rows, key=f"{recipe.name}:analytics-csv",
        )
    with right:
        if rows and st.button("Clear table", key=f"{recipe.name}:analytics-clear"):
            st.session_state[f"{recipe.name}:analytics"] = []
            st.rerun()
