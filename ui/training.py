"""The Train tab of the Image and Video pages: the new-run form (preset, dataset, fields, memory estimate, Start),
then the selected run, live (ui/run_view.py).

Pages call `training_panel` with their recipe (`ui.recipes.IMAGE` / `VIDEO`).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.config import ConfigError
from core.gpu_lease import GpuBusy, describe_holder, gpu_lock_holder
from core.page_paths import page_path_problems
from core.runs import runs_root
from ui.compare_models import release_compare_model
from ui.datasets import dataset_key, dataset_picker, dataset_problem
from ui.estimate import estimate_for, estimate_panel
from ui.form import build_config, form_values, load_into_form, model_check, stage_steps, steps_summary
from ui.recipes import Recipe, default_preset, preset_values, presets, save_form, saved_form, start_training
from ui.run_view import run_monitor
from ui.widgets import session


def gpu_note() -> None:
    holder = gpu_lock_holder(runs_root())
    if holder and holder.get("kind") == "compare":
        st.caption(f":material/memory: The compare view ({holder.get('app', 'a UI')}) holds a model on the GPU; Start asks it to let go.")
    elif holder:
        st.info(
            f"GPU busy: {describe_holder(holder)}. Start is refused until it ends or is stopped (there is no queue).",
            icon=":material/lock:",
        )


def training_panel(recipe: Recipe) -> None:
    """The new-run form across the page's width, then the selected run, live."""
    new_run_form(recipe)
    st.divider()
    run_monitor(recipe)


def new_run_form(recipe: Recipe) -> None:
    """Preset and dataset, the fields that apply, then the memory estimate beside Start with the steps of every stage.

    No `st.form`: Enter in a field only commits it (a form's Enter presses its first submit button, which would
    start an hour-long job), and the fields that apply and the estimate follow every edit."""
    st.subheader("New training run")
    options = presets(recipe)
    labels = list(options)
    saved = saved_form(recipe)  # the values of the last start (or loaded run), kept across reloads
    preset_column, dataset_column = st.columns(2)
    with preset_column:
        preset = st.selectbox(
            "Preset",
            labels,
            index=labels.index(saved[0] if saved and saved[0] in labels else default_preset(labels)),
            key=f"{recipe.name}:preset",
            help="Shipped configs: the tiny one runs on CPU in seconds with a locally built model; the full-size one is "
            "the real recipe.",
        )
    if saved and saved[0] == preset:
        base = saved[1]
        with preset_column:
            st.caption("The form holds your last values (from the last start or a loaded run).")
    else:
        try:
            base = preset_values(recipe, options[preset])
        except ConfigError as err:
            st.error(f"The preset is not a valid config: {err}")
            return
    prefix = f"{recipe.name}:{options[preset].stem if options[preset] else 'defaults'}"
    loaded = st.session_state.pop(f"{recipe.name}:load", None)
    if loaded is not None:  # "Load config into the form": every widget shows the run's value, not what it held
        load_into_form(recipe, prefix, loaded)
        st.session_state[dataset_key(prefix)] = str(loaded["data"]["root"])
    with dataset_column:
        root, data_problem = dataset_picker(recipe, base, prefix)
    gpu_note()
    values = form_values(recipe, base, prefix)
    values["data.root"] = str(root)
    try:
        cfg, problem = build_config(recipe, base, values), None
    except ConfigError as err:
        cfg, problem = None, str(err)
    model_problem = model_check(cfg.model.name, recipe.name)[0] if cfg is not None else None
    estimate = estimate_for(recipe, cfg)
    st.markdown("---")
    left, right = st.columns([3, 2], gap="large")
    with left, st.container(key=f"{recipe.name}-estimate"):
        estimate_panel(estimate, problem, model_problem)
    with right, st.container(key=f"{recipe.name}-start"):
        if cfg is not None:
            total, breakdown = steps_summary(stage_steps(cfg, recipe.grpo))
            st.markdown(f"**Trains {total}**")
            st.caption(breakdown)
        oversized = bool(estimate and estimate.get("fits") is False)
        confirmed = oversized and st.checkbox(
            "Start even though the estimate says it will not fit", key=f"{prefix}:start-oversized"
        )
        if st.button("Start training", type="primary", key=f"{prefix}:start"):
            launch_from_form(recipe, cfg, problem, preset, oversized and not confirmed, model_problem, data_problem)


def launch_from_form(recipe: Recipe, cfg, problem: str | None, preset: str, unconfirmed_oversize: bool = False,
                     model_blocker: str | None = None, data_blocker: str | None = None) -> None:
    """Start a run of the form's config, unless the config is invalid, the estimate says it will not fit (and that
    was not confirmed), or the model or the dataset cannot be used (as said beside their fields)."""
    if cfg is None:
        st.error(f"Not started: {problem}")
        return
    if unconfirmed_oversize:
        st.error(
            "Not started: the memory estimate says this config will not fit (see beside). Change what it suggests, "
            "or tick 'Start even though the estimate says it will not fit' and press Start again."
        )
        return
    # The page's path check first: the dataset check opens the data folder and the schema file the form names.
    paths = page_path_problems(cfg)
    problem = "; ".join(paths) if paths else model_blocker or dataset_problem(recipe, Path(cfg.data.root), cfg) or data_blocker
    if problem:
        st.error(f"Not started: {problem}")
        return
    release_compare_model()  # one GPU, one trainer: the compare view reloads later
    try:
        run, process = start_training(recipe, cfg)
    except GpuBusy as err:
        st.error(f"Not started: {err}. Stop it, or wait until it ends, then start again.")
        return
    except ConfigError as err:  # a path of the config outside the data and runs folders
        st.error(f"Not started: {err}")
        return
    except OSError as err:
        st.error(f"Could not start the trainer: {err}")
        return
    session("procs", {})[run.id] = process
    save_form(recipe, preset, cfg.model_dump(mode="json"))  # what this run started with fills the form after a reload
    session(f"{recipe.name}:launched", []).append(run.id)
    st.session_state[f"{recipe.name}:run"] = run.id
    st.success(f"Started run {run.id}. Closing this tab does not stop it; reopening shows it again (below).")
