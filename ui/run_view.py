"""One run, live, on its recipe's page (and its header on the Runs page): the state line and times, Stop /
Resume / Load config, the progress bar, the curves, the latest rollouts or preference pairs, the skipped samples
and the log's tail.

`run_header`, `progress_bar` and `metric_grid` are shared with the Runs page (ui/runs_page.py).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pandas as pd
import streamlit as st

from core.config import ConfigError
from core.gpu_lease import GpuBusy
from core.jsonl import read_jsonl
from core.media.paths import in_dataset
from core.preference import PAIRS, PairsSummary, read_pairs_summary, read_run_pairs
from core.runs import RunDir, RunError, stop_run
from ui import charts
from ui.compare_models import release_compare_model
from ui.recipes import (
    ACTIVE,
    RECIPES,
    RESUMABLE,
    Recipe,
    default_run,
    presets,
    recipe_runs,
    resume_training,
    save_form,
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

MAX_ROLLOUTS = 16
MAX_PAIRS = 50
PAIRS_ROW_HEIGHT = 112  # px: five lines of wrapped text (the grid wraps only rows taller than 64 px)


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
        st.caption(f"The last {MAX_PAIRS} of {len(rows)} pairs; all of them are in `{run.pairs_path}`.")
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
