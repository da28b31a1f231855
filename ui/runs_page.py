"""The Runs page: every run folder in one table (recipe, method, model, state, step, best metric, verdict,
times, weights), then the opened run: its header and controls (ui/run_view.py), the Archive button, and tabs for
its curves, config, full logs (with their download) and evaluation reports. A second tab compares runs side by
side (ui/run_comparison.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.files import human_bytes
from core.gpu_lease import gpu_lock_holder
from core.provenance import read_provenance
from core.runs import RunDir, list_runs, runs_root
from ui import charts
from ui.evaluation import render_report
from ui.recipes import ACTIVE, artifact_of, default_run, recipe_of, served_recipe, tail
from ui.run_comparison import compare_runs
from ui.run_view import is_live, metric_grid, progress_bar, run_header
from ui.widgets import flash, gone_message, run_at, show_flash


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
    every_run, side_by_side = st.tabs(["All runs", "Compare runs"])
    with every_run:
        runs_table(runs)
    with side_by_side:
        compare_runs(runs)


def runs_table(runs: list[RunDir]) -> None:
    """The runs table, then the run the user opens."""
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
        push_controls(run)
    metrics = run.read_metrics()
    progress_bar(status, metrics, active=state in ACTIVE)
    overview, config, log, evaluation = st.tabs(["Metrics", "Config", "Log", "Evaluation"])
    with overview:
        metric_grid(metrics, key="runs-curves")
        with st.expander(run.status_path.name):
            st.json(status)
    with config:
        provenance_block(run, state)
        try:
            st.code(run.config_path.read_text(), language="yaml")
        except OSError:
            st.caption("No config.yaml yet (the trainer writes it when it starts).")
    with log:
        full_log(run, run.log_path, run.log_path.name)
        if run.eval_log_path.exists():
            full_log(run, run.eval_log_path, run.eval_log_path.name)
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


def provenance_block(run: RunDir, state: str) -> None:
    """What made the run (provenance.json), in a few lines; a run without one says so, never looks complete."""
    document = read_provenance(run)
    with st.expander("Provenance", expanded=document is None):
        if document is None:
            st.warning(
                f"No provenance recorded: this run's folder has no {run.provenance_path.name} (a run from before runs "
                "recorded what made them, or one whose trainer never started). Its code version, library versions, "
                "hardware, data fingerprint and model revision are unknown."
            )
            return
        if document.get("ended") is None:
            if state in ACTIVE:
                st.caption("Recorded at the start of this launch; completed when it ends.")
            else:
                st.warning(f"Incomplete: the launch that started {document.get('started', '?')} never recorded its end "
                           f"(the run reads {state}).")
        st.markdown("\n".join(f"- {line}" for line in provenance_lines(document)))
        command = document.get("command")
        if isinstance(command, list) and command:
            st.code(" ".join(str(part) for part in command), language="bash", wrap_lines=True)


def provenance_lines(document: dict[str, Any]) -> list[str]:
    """A provenance document in words, one line per fact, for the Runs page.

    >>> lines = provenance_lines({"code": {"git_commit": "0123456789abcdef", "dirty": True, "package_version": "0.1.0"},
    ...     "libraries": {"torch": "2.9.0", "bitsandbytes": None}, "python": "3.11.9", "platform": "Linux-x86_64",
    ...     "cpu": "Intel Xeon (2 cores)", "gpu": None, "data": {"root": "/data/w", "fingerprint": "sha256:" + "ab" * 32},
    ...     "model": {"id": "tiny:qwen2_5_vl", "revision": "tiny"}, "seed": 42, "started": "2026-01-01T10:00:00+00:00",
    ...     "ended": "2026-01-01T10:01:00+00:00", "state": "finished"})
    >>> print("\\n".join(lines))
    **Code**: git `0123456789ab` with uncommitted changes (package 0.1.0)
    **Libraries**: torch 2.9.0 · bitsandbytes not installed
    **Hardware**: CPU only, Intel Xeon (2 cores); Python 3.11.9 on Linux-x86_64
    **Data**: `/data/w`, fingerprint `sha256:abababababab…`
    **Model**: `tiny:qwen2_5_vl`, a tiny model built locally
    **Seed**: 42
    **Launch**: started 2026-01-01T10:00:00+00:00, ended 2026-01-01T10:01:00+00:00, finished
    """
    code = document.get("code") or {}
    commit = code.get("git_commit")
    package = f"package {code.get('package_version') or 'version unknown'}"
    if commit:
        changes = {True: " with uncommitted changes", False: ", clean"}.get(code.get("dirty"), "")
        code_text = f"git `{str(commit)[:12]}`{changes} ({package})"
    else:
        code_text = f"{package} (not a git checkout)"
    libraries = " · ".join(f"{name} {version or 'not installed'}" for name, version in (document.get("libraries") or {}).items())
    gpu = document.get("gpu")
    if isinstance(gpu, dict):
        extra = ", ".join(f"{key} {gpu[key]}" for key in ("driver", "cuda") if gpu.get(key))
        hardware = f"{gpu.get('count', 1)} × {gpu.get('name', 'GPU')}" + (f" ({extra})" if extra else "")
        hardware += f", CPU {document.get('cpu', '?')}"
    else:
        hardware = f"CPU only, {document.get('cpu', '?')}"
    hardware += f"; Python {document.get('python', '?')} on {document.get('platform', '?')}"
    data = document.get("data") or {}
    fingerprint = data.get("fingerprint")
    data_text = f"`{data.get('root')}`, " + (
        f"fingerprint `{str(fingerprint)[:19]}…`" if fingerprint else "no fingerprint (its manifest records none)")
    model = document.get("model") or {}
    revision = model.get("revision")
    revision_text = {"tiny": "a tiny model built locally", "local": "a local folder", None: "revision unknown"}.get(
        revision, f"commit `{str(revision)[:12]}`")
    launch = f"started {document.get('started', '?')}"
    launch += f", ended {document['ended']}, {document.get('state') or 'state unknown'}" if document.get("ended") else ", not ended"
    return [
        f"**Code**: {code_text}",
        f"**Libraries**: {libraries or 'none recorded'}",
        f"**Hardware**: {hardware}",
        f"**Data**: {data_text}",
        f"**Model**: `{model.get('id', '?')}`, {revision_text}",
        f"**Seed**: {document.get('seed', '?')}",
        f"**Launch**: {launch}",
    ]


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


# A Hub repository id as the page accepts it: ORG/NAME, nothing that could read as an option or a path.
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def push_controls(run: RunDir) -> None:
    """Push an exported run to the Hub through the CLI (`python -m core.export push`): first what would be sent,
    then the upload. Private only from the page: the token is the box owner's, so making a repository public is
    left to the command line."""
    with st.expander("Push to the Hugging Face Hub"):
        repo = st.text_input("Hub repository (ORG/NAME)", key=f"runs:push-repo:{run.id}", max_chars=200).strip()
        valid = bool(REPO_ID.fullmatch(repo))
        if repo and not valid:
            st.error(f"{repo!r} is not a repository id: ORG/NAME, letters, digits, '-', '_' and '.' only.")
        command = [sys.executable, "-m", "core.export", "push", "--run", str(run.path), "--repo", repo]
        checked = f"runs:push-checked:{run.id}"
        if st.button("Check what would be pushed", key=f"runs:push-dry:{run.id}", disabled=not valid):
            done = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, timeout=120)
            st.session_state[checked] = repo if done.returncode == 0 else None
            (st.code if done.returncode == 0 else st.error)((done.stdout + done.stderr).strip())
        if st.button("Push (private)", key=f"runs:push:{run.id}", disabled=st.session_state.get(checked) != repo or not valid):
            with st.spinner(f"Pushing {run.id} to {repo}…"):
                done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
            lines = (done.stdout + done.stderr).strip().splitlines() or ["(no output)"]
            (st.success if done.returncode == 0 else st.error)(lines[-1])


live_run_detail = st.fragment(run_every=3)(run_detail)


still_run_detail = st.fragment(run_detail)
