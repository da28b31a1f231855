"""The evaluation panel: run the recipe's evaluate CLI as a job, then show base against tuned.

Reports are rendered generically: the verdict as the headline, a table of every scalar metric with its 95 %
interval, a confusion matrix per model when the report has one (image), and per-field bars when it has
`field_accuracy` / `macro_f1` (video). Colour and arrow go to a verdict only: green for `better`, red for `worse`;
`indistinguishable` and `no better than a constant answer` stay grey, whatever the sign of the change.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.config import ConfigError
from core.gpu_lease import GpuBusy
from core.verdict import BETTER, VERDICTS, WORSE, format_interval, verdict_sentence
from ui import charts
from ui.recipes import Recipe, start_evaluation, tail
from ui.widgets import log_tail, run_at, select_trained_run, session, thumbnail_uri, trained_runs


def evaluation_panel(recipe: Recipe) -> None:
    st.subheader("Evaluate base against tuned")
    runs = trained_runs(recipe)
    if not runs:
        st.info("No adapter yet: finish or stop a training run first, then evaluate it here.")
        return
    run = select_trained_run(recipe, runs, "Run", f"{recipe.name}:eval-run")
    jobs = session("eval_procs", {})
    process = jobs.get(run.id)
    running = process is not None and process.poll() is None
    if st.button("Evaluate", type="primary", disabled=running, key=f"{recipe.name}:evaluate",
                 help=f"Runs `python -m {recipe.eval_module} --run <run>` in the background; it scores both models on the held-out split."):
        try:
            jobs[run.id] = start_evaluation(recipe, run)
            running = True
        except (GpuBusy, ConfigError, OSError) as err:
            st.error(str(err))
    if running:
        evaluation_progress(recipe.name, run.id)
    elif process is not None and process.returncode not in (0, None):
        st.error(f"Evaluation failed (exit code {process.returncode}).")
        log_tail(run, run.eval_log_path, expanded=True, label="Evaluation log")
    try:
        reports = run.eval_reports()
    except OSError:
        reports = {}
    if not reports:
        if not running:
            st.caption("No evaluation report for this run yet.")
        return
    names = list(reports)
    name = names[0] if len(names) == 1 else st.selectbox("Report", names, key=f"{recipe.name}:report")
    render_report(reports[name])


@st.fragment(run_every=2)
def evaluation_progress(recipe_name: str, run_id: str) -> None:
    process = session("eval_procs", {}).get(run_id)
    if process is None or process.poll() is not None:
        st.rerun()  # done: redraw the panel with the new report
    run = run_at(run_id)
    st.info("Evaluating base and tuned on the held-out split…", icon=":material/hourglass_top:")
    st.code(tail(run.eval_log_path, 6) or "starting…", language=None, wrap_lines=True)


def render_report(report: dict[str, Any]) -> None:
    """Base against tuned: the scalar metrics, confusion matrices and per-field accuracy, whatever exists."""
    # `--baseline STAGE` puts that stage's weights in the base model's place: every label names the stage.
    baseline = str(report.get("baseline") or "base")
    models = {
        baseline if name == "base" else name: value
        for name, value in (report.get("models") or {}).items()
        if isinstance(value, dict)
    }
    if not models:
        st.warning("This report holds no model results.")
        return
    facts = [f"split **{report.get('split', '?')}**"]
    if baseline != "base":
        facts.append(f"against the **{baseline}** stage's weights")
    if report.get("artifact"):
        facts.append(f"weights `{Path(str(report['artifact'])).name}`")
    if isinstance(report.get("created"), (int, float)):
        facts.append(time.strftime("%Y-%m-%d %H:%M", time.localtime(report["created"])))
    st.markdown(" · ".join(facts))
    headline = report.get("headline")
    if isinstance(headline, dict) and headline.get("verdict") in VERDICTS and isinstance(headline.get("ci95"), list):
        verdict_headline(headline, baseline)
    else:
        unjudged_headline(models, baseline)
    for warning in report.get("warnings") or []:
        st.warning(str(warning), icon=":material/warning:")
    constants = baseline_note(report.get("baselines"))
    if constants:
        st.caption(constants)
    for note in charts.missing_data_notes(models):
        st.caption(note)
    table = charts.scalar_metrics(models, baseline)
    counts = {key for key in table.index if all(isinstance(m.get(key), int) for m in models.values() if key in m)}
    shown = format_metric_table(table, counts)
    for name, metrics in models.items():
        intervals = metrics.get("ci95")
        if isinstance(intervals, dict) and intervals:
            shown[f"{name} 95% CI"] = [format_interval(intervals.get(metric)) for metric in shown.index]
    st.dataframe(shown, width="stretch")

    confusions = {name: m["confusion"] for name, m in models.items() if isinstance(m.get("confusion"), dict)}
    if confusions:
        cols = st.columns(len(confusions))
        for column, (name, confusion) in zip(cols, confusions.items()):
            with column:
                st.altair_chart(
                    charts.confusion_chart(confusion, f"{name}: confusion (rows = expected)"),
                    width="stretch",
                    height=110 + 55 * len(confusion),
                )
    per_field = [
        (key, title)
        for key, title in (("field_accuracy", "per-field accuracy"), ("macro_f1", "per-field macro-F1"))
        if any(isinstance(m.get(key), dict) and m[key] for m in models.values())
    ]
    if per_field:
        cols = st.columns(len(per_field))
        for column, (key, title) in zip(cols, per_field):
            with column:
                chart = charts.per_field_chart(models, key, title, baseline)
                st.altair_chart(two_decimal_ticks(chart), width="stretch")
    problems = {name: m["errors"] for name, m in models.items() if isinstance(m.get("errors"), list) and m["errors"]}
    if problems or report.get("skipped"):
        with st.expander("Why answers were invalid (first few)"):
            for name, errors in problems.items():
                st.markdown(f"**{name}**")
                for error in errors:
                    st.caption(str(error))
            for skipped in report.get("skipped") or []:
                st.caption(f"skipped: {skipped}")
    examples = report.get("examples") or []
    if examples:
        with st.expander(f"Examples ({len(examples)})"):
            rows = []
            for example in examples[:50]:
                row = {(baseline if k == "base" else k): (json.dumps(v) if isinstance(v, (dict, list)) else v)
                       for k, v in example.items()}
                if example.get("image_path"):
                    row["image"] = thumbnail_uri(str(example["image_path"]))
                rows.append(row)
            st.dataframe(
                pd.DataFrame(rows), hide_index=True, width="stretch",
                column_config={"image": st.column_config.ImageColumn("image", width="small")},
            )


def verdict_headline(headline: dict[str, Any], baseline: str) -> None:
    """The verdict's words over the headline metric; the change is green or red only when the verdict says so."""
    word = headline["verdict"]
    judged = word in (BETTER, WORSE)
    low, high = headline["ci95"]
    with st.container(key="eval-headline"):
        st.metric(
            f"{headline.get('label', headline.get('metric', 'score'))}: tuned against {baseline}", f"{headline['tuned']:.3f}",
            delta=f"{headline['difference']:+.3f}", delta_color="normal" if judged else "off",
            delta_arrow="auto" if judged else "off",
            help=f"95 % interval of tuned − {baseline}: [{low:+.3f}, {high:+.3f}], {headline.get('interval', 'paired')}",
        )
        st.markdown(f"Verdict: **{word}**")
        st.caption(verdict_sentence(headline, baseline))


def unjudged_headline(models: dict[str, dict[str, Any]], baseline: str) -> None:
    """A report written before intervals: the change, in grey, and no claim beyond it."""
    summary = charts.headline(models, baseline)
    if not summary:
        return
    with st.container(key="eval-headline"):
        better = "better" if summary["gain"] > 0 else ("no better" if summary["gain"] == 0 else "worse")
        before = f"{baseline} {summary['base']:.3f} → tuned {summary['tuned']:.3f}"
        st.metric(
            f"{summary['label']}: tuned against {baseline}", f"{summary['tuned']:.3f}", delta=f"{summary['gain']:+.3f}",
            delta_color="off", delta_arrow="off", help=before,
        )
        st.caption(f"{before}: tuned is {better} than {baseline} ({summary['gain']:+.3f})")
        st.caption("This report has no confidence intervals, so no verdict: evaluate again to get one.")


def baseline_note(baselines: Any) -> str:
    """What a constant answer scores on the same samples, in one line ('' when the report has none).

    >>> baseline_note({"majority": {"answer": "No", "accuracy": 0.5, "ci95": [0.364, 0.636]}, "chance": {"accuracy": 0.5}})
    'Constant answers on the same samples: always "No" 0.500 [0.364, 0.636] · chance 0.500'
    >>> baseline_note({"most_frequent": {"field_accuracy_mean": 0.917, "ci95": [0.85, 0.98]}})
    "Constant answers on the same samples: each field's most frequent value, field accuracy 0.917 [0.850, 0.980]"
    """
    if not isinstance(baselines, dict):
        return ""
    parts = []
    majority, chance, frequent = (baselines.get(k) for k in ("majority", "chance", "most_frequent"))
    if isinstance(majority, dict) and isinstance(majority.get("accuracy"), (int, float)):
        interval = format_interval(majority.get("ci95"))
        parts.append(f'always "{majority.get("answer")}" {majority["accuracy"]:.3f} {interval}'.rstrip())
    if isinstance(chance, dict) and isinstance(chance.get("accuracy"), (int, float)):
        parts.append(f"chance {chance['accuracy']:.3f}")
    if isinstance(frequent, dict) and isinstance(frequent.get("field_accuracy_mean"), (int, float)):
        parts.append(f"each field's most frequent value, field accuracy {frequent['field_accuracy_mean']:.3f} "
                     f"{format_interval(frequent.get('ci95'))}".rstrip())
    return "Constant answers on the same samples: " + " · ".join(parts) if parts else ""


def two_decimal_ticks(chart):
    """The x axis (the score) labelled with two decimals, on every layer: Vega's default format takes the tick
    step's one decimal, so the ticks at 0.25 and 0.75 read 0.3 and 0.8."""
    for layer in getattr(chart, "layer", None) or [chart]:
        x = layer.encoding.x
        layer.encoding.x = x.axis(**{**(x.to_dict().get("axis") or {}), "format": ".2f"})  # keeps the tick values
    return chart


def format_metric_table(table: pd.DataFrame, counts: set[str] = frozenset()) -> pd.DataFrame:
    """Counts as integers, other metrics with three decimals, changes signed.

    >>> format_metric_table(pd.DataFrame({"base": [4.0, 0.5], "tuned": [4.0, 0.75], "change": [0.0, 0.25]},
    ...                                  index=["n", "accuracy"]), {"n"}).values.tolist()
    [['4', '4', '+0'], ['0.500', '0.750', '+0.250']]
    """
    shown = pd.DataFrame(index=table.index, columns=table.columns, dtype=object)
    for metric in table.index:
        for column in table.columns:
            value = table.at[metric, column]
            sign = "+" if column == "change" else ""
            if pd.isna(value):
                shown.at[metric, column] = ""
            elif metric in counts:
                shown.at[metric, column] = f"{int(value):{sign}d}"
            else:
                shown.at[metric, column] = f"{value:{sign}.3f}"
    return shown
