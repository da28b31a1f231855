"""The panels the Image and Video pages share: training (form, dataset, live run), compare, evaluation,
and the Runs page.

Pages call these with their recipe (`ui.recipes.IMAGE` / `VIDEO`). Compare and evaluation live in their own
modules and are re-exported here, so a page imports everything it shows from one place.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.config import ConfigError
from core.gpu_lease import GpuBusy, describe_holder, gpu_lock_holder
from core.jsonl import read_jsonl
from core.media.paths import in_dataset
from core.page_paths import page_path_problems
from core.preference import PAIRS, PAIRS_FILE, PairsSummary, read_pairs_summary, read_run_pairs
from core.runs import RunDir, RunError, list_runs, runs_root, stop_run
from ui import charts
from ui.compare import compare_panel
from ui.compare_models import release_compare_model
from ui.datasets import dataset_key, dataset_picker, dataset_problem
from ui.estimate import estimate_for, estimate_panel
from ui.evaluation import evaluation_panel, render_report
from ui.form import build_config, form_values, load_into_form, model_check, stage_steps, steps_summary
from ui.recipes import (
    ACTIVE,
    RECIPES,
    RESUMABLE,
    Recipe,
    artifact_of,
    default_preset,
    default_run,
    preset_values,
    presets,
    recipe_of,
    recipe_runs,
    resume_training,
    save_form,
    saved_form,
    served_recipe,
    start_training,
    tail,
)
from ui.widgets import (
    STATE_HELP,
    flash,
    gone_message,
    log_tail,
    run_at,
    session,
    show_flash,
    state_badge,
    state_of,
    thumbnail_uri,
)

__all__ = ["compare_panel", "ensure_router", "evaluation_panel", "runs_overview", "training_panel"]


MAX_ROLLOUTS = 16
MAX_PAIRS = 50
PAIRS_ROW_HEIGHT = 112  # px: five lines of wrapped text (the grid wraps only rows taller than 64 px)
ROUTER_FLAG = "vlm:router"


def ensure_router(page: str) -> None:
    """Send a page that runs outside `ui/app.py`'s router back through it (asking for `page`).

    A `pages/` folder next to the main script makes Streamlit run the very first page request of a fresh
    server in its legacy multipage mode, where `/video` runs `pages/video.py` alone: without the router's
    page selection (VLM_PAGE) and layout. The router marks the session; an unmarked page goes to the router.
    """
    if not st.session_state.get(ROUTER_FLAG):
        st.switch_page("app.py", query_params={"page": page})


def gpu_note() -> None:
    holder = gpu_lock_holder(runs_root())
    if holder and holder.get("kind") == "compare":
        st.caption(f":material/memory: The compare view ({holder.get('app', 'a UI')}) holds a model on the GPU; Start asks it to let go.")
    elif holder:
        st.info(
            f"GPU busy: {describe_holder(holder)}. Start is refused until it ends or is stopped (there is no queue).",
            icon=":material/lock:",
        )


# ---------------------------------------------------------------------------------------------- training


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


# ---------------------------------------------------------------------------------------------- live run


def pick_run(recipe: Recipe, label: str = "Run") -> RunDir | None:
    """The run this page shows: the user's pick, else the newest active run of this recipe, else the newest."""
    key = f"{recipe.name}:run"
    runs = recipe_runs(recipe)
    ids = [r.id for r in runs]
    # Runs launched from this tab have a folder before the trainer writes status.json.
    for run_id in reversed(session(f"{recipe.name}:launched", [])):
        if run_id not in ids and run_at(run_id).exists():
            ids.insert(0, run_id)
    current = st.session_state.get(key)
    if current is not None and current not in ids:
        gone_message(current)
        del st.session_state[key]
    if not ids:
        st.info(
            f"No {recipe.name} runs yet. Start one with the form; runs started from the command line "
            f"(`make train-{recipe.name}`) appear here too."
        )
        return None
    if key not in st.session_state:
        chosen = default_run(runs)
        st.session_state[key] = chosen.id if chosen else ids[0]
    # Labels must not change between reruns (Streamlit matches a selection by its label), so no state here.
    run_id = st.selectbox(label, ids, key=key)
    return run_at(run_id)


def run_monitor(recipe: Recipe) -> None:
    st.subheader("Training run")
    run = pick_run(recipe)
    if run is None:
        return
    (live_run_view if is_live(run) else still_run_view)(recipe.name, run.id)


def is_live(run: RunDir) -> bool:
    """Worth polling: active, launching, or (re)started from this session and not yet reporting."""
    state = state_of(run)
    if state in ACTIVE or (state == "missing" and run.exists()):
        return True
    process = session("procs", {}).get(run.id)
    return process is not None and process.poll() is None


def run_view(recipe_name: str, run_id: str) -> None:
    """Status, progress, controls, curves and rollouts of one run, on its recipe's page."""
    recipe = RECIPES[recipe_name]
    run = run_at(run_id)
    if not run.exists():
        gone_message(run_id)
        return
    status = run_header(run, recipe, scope=recipe_name)
    state = status.get("state", "missing")
    if state == "missing" or (state == "starting" and not status.get("total")):
        launching_note(run, status)
        return
    metrics = run.read_metrics()
    progress_bar(status, metrics, active=state in ACTIVE)
    if status.get("wandb_url"):
        st.link_button("Open this run in W&B ↗", status["wandb_url"])
    metric_grid(metrics, key=f"{recipe_name}-curves", columns=2)
    if recipe.grpo:
        rollout_table(run)
    pairs_table(run)
    skipped_clips(run)
    log_tail(run, expanded=state in ("failed", "crashed"))


def run_header(run: RunDir, recipe: Recipe | None, scope: str) -> dict[str, Any]:
    """One run's state, times, Stop / Resume (and, on a recipe page, Load config) and what the last action did;
    the same on a recipe's page (`scope` is the recipe's name) and on the runs page (`scope` "runs"). Returns
    the status it drew."""
    status = run.read_status()
    state = status.get("state", "missing")
    on_runs_page = scope == "runs"
    prefix = "runs:" if on_runs_page else ""
    seen_key = f"{'runs-' if on_runs_page else ''}seen:{run.id}"
    before = st.session_state.get(seen_key)
    st.session_state[seen_key] = state
    if before is not None and before != state:
        # A new state (running, finished, ...): refresh the whole page, so the run picker or the runs table, and
        # the compare and evaluation panels (which list runs with weights), catch up.
        st.rerun()
    with st.container(key=f"{scope}-run-state"):
        left, right = st.columns([3, 2], vertical_alignment="center")
        with left:
            if on_runs_page:
                st.markdown(f"### {run.id}")
            state_badge(state)
            st.caption(run_times(status))
        with right, st.container(horizontal=True, horizontal_alignment="right"):
            if state in ACTIVE or state == "missing":
                stop_button(scope, run, key=f"{prefix}stop:{run.id}")
            if state in RESUMABLE and recipe is not None and st.button(
                "Resume training", key=f"{prefix}resume:{run.id}", type="primary"
            ):
                request_resume(recipe, run, scope)
            if not on_runs_page and recipe is not None and run.config_path.exists() and st.button(
                "Load config into the form", key=f"load-config:{run.id}", help="Fill the new-run form with this run's config.yaml"
            ):
                load_run_config(recipe, run)
    show_flash(scope)
    stopping = run.id in session("stop_requested", set())
    if state == "stopping" or (stopping and state in ACTIVE):
        st.info("Stopping: saving a checkpoint… (at the next step boundary)", icon=":material/hourglass_top:")
    elif state == "stopped" and stopping:
        st.success(f"Stopped at step {status.get('step')}: checkpoint saved. Resume continues from it.")
    if state == "failed":
        st.error(f"Training failed: {status.get('error') or 'no message (see the log)'}")
    elif state == "crashed":
        st.error(STATE_HELP["crashed"])
    return status


def skipped_clips(run: RunDir) -> None:
    """The training samples left out so far (`skipped.jsonl`), by kind, each with its clip and metadata line."""
    records = list(read_jsonl(run.skipped_path))
    if not records:
        return
    kinds = ", ".join(f"{kind} {count}" for kind, count in Counter(r.get("kind") for r in records).most_common())
    with st.expander(f"{len(records)} training sample(s) skipped ({kinds})", icon=":material/warning:"):
        st.dataframe(
            [
                {"clip": r.get("video"), "line": r.get("line_no"), "kind": r.get("kind"), "stage": r.get("stage"), "message": r.get("message")}
                for r in records[-200:]
            ],
            hide_index=True,
        )


live_run_view = st.fragment(run_every=2)(run_view)


still_run_view = st.fragment(run_view)


def load_run_config(recipe: Recipe, run: RunDir) -> None:
    """Put a run's resolved config into the new-run form (under the current preset), then redraw the page: the
    form writes every field's widget state from it before drawing (see new_run_form)."""
    from ui.compare_models import run_config

    try:
        values = run_config(recipe, run).model_dump(mode="json")
    except (OSError, ConfigError) as err:
        flash(recipe.name, "error", f"Cannot load the config of run {run.id}: {err}")
        return
    preset = st.session_state.get(f"{recipe.name}:preset") or next(iter(presets(recipe)))
    save_form(recipe, preset, values)
    st.session_state[f"{recipe.name}:load"] = values
    flash(recipe.name, "success", f"The form now holds the config of run {run.id}.")
    st.rerun()


def run_times(status: dict[str, Any]) -> str:
    parts = []
    if status.get("started"):
        parts.append(f"started {status['started']}")
    if status.get("ended"):
        parts.append(f"ended {status['ended']}")
        took = run_seconds(status)
        if took is not None:
            parts.append(f"took {charts.format_duration(took)}")
    if status.get("pid") and status.get("state") in ACTIVE:
        parts.append(f"pid {status['pid']}")
    return " · ".join(parts)


def run_seconds(status: dict[str, Any]) -> float | None:
    """How long an ended run ran: its launches' time together (`active_s`, kept by RunDir.write_status)."""
    active = status.get("active_s")
    return float(active) if isinstance(active, (int, float)) else None


def launching_note(run: RunDir, status: dict[str, Any]) -> None:
    process = session("procs", {}).get(run.id)
    code = process.poll() if process is not None else None
    if code is not None and status.get("state") in ("missing", "starting"):
        st.error(f"The trainer exited (code {code}) before it started. Its log:")
        st.code(tail(run.log_path) or "(empty log)", language=None, wrap_lines=True)
    elif run.id in session("stop_requested", set()):
        st.info("Stop requested: the trainer stops as soon as it has started (nothing trained yet).", icon=":material/hourglass_top:")
    else:
        st.info("Launching the trainer: loading libraries, the model and the data…", icon=":material/hourglass_top:")
        log_tail(run)


def progress_bar(status: dict[str, Any], metrics: list[dict], active: bool) -> None:
    step, total = status.get("step") or 0, status.get("total")
    if not total:
        return
    # The pairs stage counts prompts sampled, not optimizer steps (and logs no metric line until it ends).
    text = f"{step} of {total} prompts sampled" if status.get("stage") == PAIRS else f"step {step} of {total}"
    stages = status.get("stages") or []
    if status.get("stage") in stages:  # a warm start or curriculum: each stage counts its own steps
        text = f"stage {stages.index(status['stage']) + 1} of {len(stages)} ({status['stage']}) · " + text
    if active:
        eta = charts.eta_seconds(status, metrics, time.time())
        text += f" · about {charts.format_duration(eta)} left" if eta is not None else " · estimating time left…"
    st.progress(min(max(step / total, 0.0), 1.0), text=text)


def metric_grid(metrics: list[dict], key: str, columns: int = 3) -> None:
    """One small chart per metric that exists in metrics.jsonl."""
    frame = charts.metrics_frame(metrics)
    curves = charts.curve_columns(frame.columns)
    with st.container(key=key):
        if not curves:
            st.caption("Curves appear here after the first logged step.")
            return
        cols = st.columns(columns)
        for index, (column, title) in enumerate(curves):
            with cols[index % columns]:
                st.altair_chart(charts.curve_chart(frame, column, title), width="stretch")


def rollout_table(run: RunDir) -> None:
    rows = list(reversed(run.read_rollouts(last=MAX_ROLLOUTS)))
    if not rows:
        return
    st.markdown("**Latest rollouts** (completions sampled during training and their rewards)")
    table = []
    for row in rows:
        entry = {
            "step": row.get("step"),
            "image": thumbnail_uri(row["image_path"]) if row.get("image_path") else None,
            "answer": row.get("answer"),
        }
        for name, value in (row.get("rewards") or {}).items():
            entry[charts.reward_label(name)] = value
        entry["completion"] = row.get("completion")
        table.append(entry)
    st.dataframe(
        pd.DataFrame(table),
        hide_index=True,
        width="stretch",
        column_config={
            "image": st.column_config.ImageColumn("image", width="small"),
            "completion": st.column_config.TextColumn("completion", width="large"),
        },
    )


def pairs_table(run: RunDir) -> None:
    """The preference pairs of a DPO run (`pairs.jsonl`), under the summary line of `pairs_summary.json`: each
    prompt's image (or clip window), its chosen and rejected answers, their scores and the margin."""
    rows = read_run_pairs(run)
    if not rows:
        return
    st.markdown("**Preference pairs** (the best- and the worst-scored of the answers sampled for each prompt)")
    summary = read_pairs_summary(run)
    if summary:
        st.caption(pairs_summary_line(summary))
    try:
        data_root = (run.read_config().get("data") or {}).get("root") or "."
    except (OSError, ConfigError):
        data_root = "."  # a pairs line's image is then looked for as written
    table = []
    for row in rows[-MAX_PAIRS:]:
        entry: dict[str, Any] = {}
        if row.get("image_path"):
            entry["image"] = thumbnail_uri(str(in_dataset(data_root, row["image_path"])))
        if row.get("video"):
            entry["clip"] = clip_reference(row)
        expected = row.get("answer", row.get("label"))
        if expected is not None:
            entry["expected"] = expected if isinstance(expected, str) else json.dumps(expected)
        entry.update({
            "chosen": row.get("chosen"), "rejected": row.get("rejected"),
            "chosen score": row.get("chosen_score"), "rejected score": row.get("rejected_score"), "margin": row.get("margin"),
        })
        table.append(entry)
    if len(rows) > MAX_PAIRS:
        st.caption(f"The last {MAX_PAIRS} of {len(rows)} pairs; all of them are in `{run.path / PAIRS_FILE}`.")
    # Rows taller than 4rem let the grid wrap text, so a long answer shows whole instead of cut at the column's edge.
    st.dataframe(
        pd.DataFrame(table),
        hide_index=True,
        width="stretch",
        row_height=PAIRS_ROW_HEIGHT,
        column_config={
            "image": st.column_config.ImageColumn("image", width="small"),
            "chosen": st.column_config.TextColumn("chosen", width="large"),
            "rejected": st.column_config.TextColumn("rejected", width="large"),
        },
    )


def pairs_summary_line(summary: dict[str, Any]) -> str:
    """The pairs stage's own summary line (core's), or the file's fields as they are when it does not fit."""
    try:
        return PairsSummary(**summary).line()
    except TypeError:
        return ", ".join(f"{key}: {value}" for key, value in summary.items())


def clip_reference(row: dict[str, Any]) -> str:
    """A video pair's prompt: its clip, the window and the metadata line.

    >>> clip_reference({"video": "videos/a.mp4", "start_s": 2.0, "end_s": 6.5, "line_no": 7})
    'videos/a.mp4 2.0–6.5 s (line 7)'
    """
    text = str(row.get("video"))
    start, end = row.get("start_s"), row.get("end_s")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        text += f" {start:.1f}–{end:.1f} s"
    if row.get("line_no") is not None:
        text += f" (line {row['line_no']})"
    return text


def stop_button(scope: str, run: RunDir, key: str) -> None:
    """Stop, shown for active runs. A callback, so a run that ends between drawing and clicking still gets
    its answer ("Nothing to stop: ...") even though the next draw no longer has the button."""
    st.button(
        "Stop training", key=key, on_click=request_stop, args=(scope, run),
        help="Writes a stop request into the run folder: the trainer saves a checkpoint at the next step, then stops.",
    )


def request_stop(scope: str, run: RunDir) -> None:
    """Write a stop request into the run folder (and SIGTERM it when it runs in this container); "saving…"
    shows until the trainer reports `stopped`. Works the same on a run started from the other app."""
    code, message = stop_run(run, by="Runs page" if scope == "runs" else f"{scope.capitalize()} VLM page")
    if code == 0 and message.startswith("Stopping"):
        session("stop_requested", set()).add(run.id)
    else:
        flash(scope, "info" if code == 0 else "error", message)


def request_resume(recipe: Recipe, run: RunDir, scope: str) -> None:
    """Relaunch a stopped or crashed run from its latest checkpoint, then redraw the page to follow it live."""
    release_compare_model()
    try:
        process = resume_training(recipe, run)
    except RunError as err:  # a second click while the first launch is pending
        flash(scope, "info", f"{err} Nothing else was started.")
        return
    except (GpuBusy, ConfigError) as err:
        flash(scope, "error", f"Not resumed: {err}")
        return
    except OSError as err:
        flash(scope, "error", f"Could not resume: {err}")
        return
    session("procs", {})[run.id] = process
    session("stop_requested", set()).discard(run.id)
    flash(scope, "success", f"Resuming run {run.id} from its latest checkpoint.")
    st.rerun()


# ---------------------------------------------------------------------------------------------- runs page


def runs_overview() -> None:
    holder = gpu_lock_holder(runs_root())
    st.caption(
        f"Run folders in `{runs_root().resolve()}` (env VLM_RUNS_DIR), whether started here or from the command line. "
        + (f"GPU: held by run **{holder.get('run_id')}**." if holder else "GPU: free.")
    )
    runs = list_runs(runs_root())
    if not runs:
        show_flash("runs")  # an archived last run: its message, since no run header is left to show it
        st.info("No runs yet. Start one from the Image or Video page, or with `make train-image` / `make train-video`.")
        return
    st.dataframe(pd.DataFrame([run_row(run) for run in runs]), hide_index=True, width="stretch", key="runs-table")
    ids = [run.id for run in runs]
    key = "runs:open"
    current = st.session_state.get(key)
    if current is not None and current not in ids:
        gone_message(current)
        del st.session_state[key]
    if key not in st.session_state:
        # A single-recipe server (one container per recipe) opens its own recipe's run first.
        own = served_recipe()
        chosen = default_run([run for run in runs if own is None or recipe_of(run) is own]) or default_run(runs)
        st.session_state[key] = chosen.id
    run_id = st.selectbox("Open run", ids, key=key)
    (live_run_detail if is_live(run_at(run_id)) else still_run_detail)(run_id)


def run_row(run: RunDir) -> dict[str, Any]:
    """One line of the runs table: what ran (recipe, method, model), how far, and how well."""
    status = run.read_status()
    recipe = recipe_of(run)
    step, total = status.get("step"), status.get("total")
    artifact = artifact_of(run)
    try:
        config = run.read_config()
    except (OSError, ValueError):
        config = {}
    try:
        reports = run.eval_reports()
    except OSError:
        reports = {}
    best, verdict = best_result(reports, run.read_metrics())
    return {
        "run": run.id,
        "recipe": recipe.name if recipe else "?",
        "method": method_text(config),
        "model": str((config.get("model") or {}).get("name") or ""),
        "state": status.get("state", "missing"),
        "step": f"{step}/{total}" if total else (str(step) if step is not None else ""),
        "best metric": best,
        "verdict": verdict,
        "started": status.get("started", ""),
        "ended": status.get("ended", ""),
        "weights": artifact.name if artifact else "",
    }


def method_text(config: dict[str, Any]) -> str:
    """
    >>> method_text({"method": "grpo", "finetune": {"method": "qlora"}}), method_text({"finetune": {"method": "lora"}})
    ('GRPO · QLoRA (4-bit)', 'LoRA')
    """
    from ui.form import METHOD_NAMES

    finetune = (config.get("finetune") or {}).get("method")
    parts = [str(config["method"]).upper()] if config.get("method") else []
    if finetune:
        parts.append(METHOD_NAMES.get(finetune, str(finetune)))
    return " · ".join(parts)


def report_verdict(report: dict[str, Any]) -> str | None:
    """An evaluation report's verdict word (`verdict`, or its headline's), when the report has one.

    >>> report_verdict({"verdict": "better"}), report_verdict({"headline": {"verdict": "worse"}}), report_verdict({})
    ('better', 'worse', None)
    """
    word = report.get("verdict")
    if word is None:
        word = (report.get("headline") or {}).get("verdict")
    if isinstance(word, dict):
        word = word.get("verdict") or word.get("word")
    return str(word) if word else None


def best_result(reports: dict[str, dict[str, Any]], metrics: list[dict[str, Any]]) -> tuple[str, str]:
    """(best metric, verdict) of a run: the evaluation report whose tuned model scores highest on its headline
    metric, with that report's verdict (or, without one, the metric again); without a report, the best training
    figure of metrics.jsonl (reward, else loss), and no verdict.

    >>> report = {"models": {"base": {"accuracy": 0.5}, "tuned": {"accuracy": 0.875}}, "verdict": "better"}
    >>> best_result({"test": report}, [])
    ('accuracy 0.875 (test; base 0.500)', 'better')
    >>> best_result({}, [{"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.3}])
    ('reward 0.300 (training, best step 2)', '')
    """
    ranked = []
    for name, report in reports.items():
        baseline = str(report.get("baseline") or "base")
        models = {baseline if key == "base" else key: value for key, value in (report.get("models") or {}).items()}
        head = charts.headline(models, baseline) if isinstance(models.get("tuned"), dict) else None
        if head:
            text = f"{head['label']} {head['tuned']:.3f} ({name}; {baseline} {head['base']:.3f})"
            ranked.append((head["tuned"], text, report))
    if ranked:
        _, text, report = max(ranked, key=lambda item: item[0])
        return text, report_verdict(report) or text
    for key, best in (("reward", max), ("eval_loss", min), ("loss", min)):
        points = [m for m in metrics if isinstance(m.get(key), (int, float))]
        if points:
            chosen = best(points, key=lambda m: m[key])
            return f"{key} {chosen[key]:.3f} (training, best step {chosen.get('step')})", ""
    return "", ""


def run_detail(run_id: str) -> None:
    """One run on the runs page: its header, then tabs for curves, config, logs and evaluation reports."""
    run = run_at(run_id)
    if not run.exists():
        gone_message(run_id)
        return
    status = run_header(run, recipe_of(run), scope="runs")
    state = status.get("state", "missing")
    if state not in ACTIVE and state != "missing":
        archive_button(run)
    metrics = run.read_metrics()
    progress_bar(status, metrics, active=state in ACTIVE)
    overview, config, log, evaluation = st.tabs(["Metrics", "Config", "Log", "Evaluation"])
    with overview:
        metric_grid(metrics, key="runs-curves")
        with st.expander("status.json"):
            st.json(status)
    with config:
        try:
            st.code(run.config_path.read_text(), language="yaml")
        except OSError:
            st.caption("No config.yaml yet (the trainer writes it when it starts).")
    with log:
        full_log(run, run.log_path, "train.log")
        if (run.path / "eval.log").exists():
            full_log(run, run.path / "eval.log", "eval.log")
    with evaluation:
        try:
            reports = run.eval_reports()
        except OSError:
            reports = {}
        if not reports:
            st.caption("No evaluation reports.")
        for name, report in reports.items():
            st.markdown(f"**{name}**")
            render_report(report)


# The most of a log drawn on the page; the download has all of it.
LOG_SHOWN_BYTES = 2_000_000


def full_log(run: RunDir, path: Path, name: str) -> None:
    """A log file, all of it up to LOG_SHOWN_BYTES (its end beyond that), in a scrolling box, with a download of the
    whole file."""
    try:
        size = path.stat().st_size
    except OSError:
        st.caption(f"No {name} yet.")
        return

    def whole() -> bytes:
        try:
            return path.read_bytes()
        except OSError:
            return b""

    head, button_column = st.columns([4, 1], vertical_alignment="bottom")
    with head:
        shown = "all of it" if size <= LOG_SHOWN_BYTES else f"its last {LOG_SHOWN_BYTES / 1e6:.0f} MB"
        st.markdown(f"**{name}** ({human_bytes(size)}, {shown})")
    with button_column:
        st.download_button(
            f"Download {name}", data=whole, file_name=f"{run.id}-{name}", mime="text/plain", on_click="ignore",
            key=f"runs:download:{run.id}:{name}", icon=":material/download:",
        )
    text = tail(path, lines=10**9, max_bytes=LOG_SHOWN_BYTES)
    st.code(text or "(empty)", language=None, wrap_lines=True, height=420 if text.count("\n") > 20 else "content")


def human_bytes(size: float) -> str:
    """
    >>> human_bytes(512), human_bytes(12_345), human_bytes(3_400_000)
    ('512 B', '12.3 KB', '3.4 MB')
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


def archive_button(run: RunDir) -> None:
    """Archive an ended run: its folder moves under the runs folder's .archive/ (core.archive), nothing is deleted."""
    from core.archive import ArchiveError, archive_run

    if not st.button("Archive run", key=f"runs:archive:{run.id}", icon=":material/archive:",
                     help="Moves this run's folder to .archive/ under the runs folder, out of every list. Nothing is "
                     "deleted: move it back to restore it."):
        return
    try:
        target = archive_run(run, runs_root())
    except ArchiveError as err:
        flash("runs", "error", str(err))
    else:
        flash("runs", "success", f"Archived run {run.id}: moved to {target}.")
        st.session_state.pop("runs:open", None)
    st.rerun()


live_run_detail = st.fragment(run_every=3)(run_detail)


still_run_detail = st.fragment(run_detail)
