"""Charts and tables built from run files: training curves, ETA, evaluation metrics, confusion matrices.

Pure functions of plain data (no Streamlit), so they are tested without a browser.
"""

from __future__ import annotations

import math
import re
import textwrap
from datetime import datetime
from typing import Any

import altair as alt
import pandas as pd

from core.preference import DPO_CURVES

# Titles of the DPO metrics TRL logs (core.preference.DPO_CURVES names which ones the run view plots).
DPO_TITLES = {
    "rewards/chosen": "DPO reward: chosen",
    "rewards/rejected": "DPO reward: rejected",
    "rewards/margins": "DPO margin (chosen − rejected)",
    "rewards/accuracies": "DPO accuracy (chosen ranked above rejected)",
}
# Curves worth a chart, in display order; `rewards/<name>/mean` columns are inserted after `loss`.
CURVES = (
    ("loss", "loss"),
    ("reward", "total reward"),
    ("eval_loss", "eval loss"),
    ("mean_token_accuracy", "token accuracy"),
    *((name, DPO_TITLES.get(name, name)) for name in DPO_CURVES),
    ("learning_rate", "learning rate"),
    ("grad_norm", "grad norm"),
)
_REWARD_COLUMN = re.compile(r"^rewards/(.+)/mean$")


def reward_label(name: str) -> str:
    """
    >>> reward_label("format_reward")
    'format'
    """
    return name.removesuffix("_reward")


def curve_columns(columns) -> list[tuple[str, str]]:
    """(column, title) of each curve present in the metrics, one chart each.

    >>> curve_columns(["step", "loss", "rewards/format_reward/mean", "reward", "learning_rate", "time"])
    [('loss', 'loss'), ('rewards/format_reward/mean', 'reward: format'), ('reward', 'total reward'), ('learning_rate', 'learning rate')]
    >>> [title for _, title in curve_columns(["loss", "rewards/chosen", "rewards/margins", "rewards/accuracies"])]
    ['loss', 'DPO reward: chosen', 'DPO margin (chosen − rejected)', 'DPO accuracy (chosen ranked above rejected)']
    """
    columns = list(columns)
    found = [(c, t) for c, t in CURVES if c in columns]
    rewards = [(c, f"reward: {reward_label(m.group(1))}") for c in columns if (m := _REWARD_COLUMN.match(c))]
    at = 1 if found and found[0][0] == "loss" else 0
    return found[:at] + rewards + found[at:]


def metrics_frame(metrics: list[dict[str, Any]]) -> pd.DataFrame:
    """The metrics log as a frame with a numeric `step`; rows without a step are dropped.

    Stages (a warm start, curriculum stages) each count their steps from 1; `run_step` lays them end to end,
    so the curves run left to right through the stages instead of drawing over each other.

    >>> frame = metrics_frame([{"step": 1, "stage": "warm_start"}, {"step": 2, "stage": "warm_start"}, {"step": 1, "stage": "grpo"}])
    >>> frame["run_step"].tolist()
    [1, 2, 3]
    """
    frame = pd.DataFrame(metrics)
    if frame.empty or "step" not in frame:
        return pd.DataFrame(columns=["step", "run_step"])
    frame = frame[pd.to_numeric(frame["step"], errors="coerce").notna()].copy()
    frame["step"] = frame["step"].astype(int)
    frame["run_step"] = frame["step"]
    if "stage" in frame:
        offset = 0
        for stage in dict.fromkeys(frame["stage"].dropna()):
            rows = frame["stage"] == stage
            frame.loc[rows, "run_step"] = frame.loc[rows, "step"] + offset
            offset += int(frame.loc[rows, "step"].max())
    return frame


def trained_stages(frame: pd.DataFrame) -> list[str]:
    """The stages that trained a step, in run order. A pairs stage trains none: it logs its summary at step 0.

    >>> dpo_run = [{"step": 2, "stage": "sft"}, {"step": 0, "stage": "pairs"}, {"step": 1, "stage": "dpo"}]
    >>> trained_stages(metrics_frame(dpo_run))
    ['sft', 'dpo']
    """
    if "stage" not in frame:
        return []
    last_step = frame.dropna(subset=["stage"]).groupby("stage", sort=False)["step"].max()
    return [str(stage) for stage, step in last_step.items() if step > 0]


def stage_boundaries(frame: pd.DataFrame) -> list[tuple[float, str]]:
    """(x, stage) where each stage after the first begins on the run-wide step axis; a stage that trained no step
    (pairs) has no width, so it has no boundary of its own: DPO's follows the stage before it.

    >>> stage_boundaries(metrics_frame([{"step": 1, "stage": "warm_start"}, {"step": 2, "stage": "warm_start"},
    ...                                 {"step": 1, "stage": "grpo"}]))
    [(2.5, 'grpo')]
    >>> stage_boundaries(metrics_frame([{"step": 2, "stage": "sft"}, {"step": 0, "stage": "pairs"}, {"step": 1, "stage": "dpo"}]))
    [(2.5, 'dpo')]
    >>> stage_boundaries(metrics_frame([{"step": 1}]))
    []
    """
    stages = trained_stages(frame)
    return [(int(frame.loc[frame["stage"] == stage, "run_step"].min()) - 0.5, stage) for stage in stages[1:]]


# The plot area's height in pixels; the title, axes and the stage legend come on top of it.
CURVE_HEIGHT = 170
# Streamlit sizes a chart that names no autosize with "fit": the height above would then be the whole chart's,
# and the title, the x axis and the stage legend took all of it (the plot came out 0 px high, a flat line with no
# y axis). fit-x: the width follows the column, the height is the plot's own.
CURVE_AUTOSIZE = alt.AutoSizeParams(type="fit-x", contains="padding")
LABEL_ROW_PX = 13  # each stage label has its own row above the plot, so two labels never overlap
TITLE_CHARS = 24  # Streamlit cuts a title at the chart's width less 40 px: about 27 characters in a 2-column grid


def chart_title(title: str, width: int = TITLE_CHARS) -> str | alt.TitleParams:
    """The title itself when it fits on a line, else wrapped into lines, any `(detail)` as the subtitle.

    >>> chart_title("loss")
    'loss'
    >>> params = chart_title("DPO accuracy (chosen ranked above rejected)")
    >>> params.text, params.subtitle
    (['DPO accuracy'], ['(chosen ranked above rejected)'])
    """
    if len(title) <= width:
        return title
    main, bracket, detail = title.partition(" (")
    lines = textwrap.wrap(main, width)
    if not bracket:
        return alt.TitleParams(lines)
    return alt.TitleParams(lines, subtitle=textwrap.wrap(bracket.strip() + detail, width + 6))


def curve_chart(frame: pd.DataFrame, column: str, title: str) -> alt.Chart | alt.LayerChart:
    """A small line chart of one metric against the step, coloured by stage, with a rule where each stage begins
    and the stage's name above it, one label row per stage."""
    x = "run_step" if "run_step" in frame else "step"
    keep = list(dict.fromkeys(["step", x, column] + (["stage"] if "stage" in frame else [])))
    data = frame[keep].rename(columns={column: "value"})
    data = data[pd.to_numeric(data["value"], errors="coerce").notna()]
    staged = "stage" in data and data["stage"].notna().any()
    encoding: dict[str, Any] = {
        "x": alt.X(f"{x}:Q", title="step (all stages)" if staged else "step", axis=alt.Axis(tickMinStep=1, format="d")),
        "y": alt.Y("value:Q", title=None, scale=alt.Scale(zero=False), axis=alt.Axis(format="~g")),
        "tooltip": ["step:Q", alt.Tooltip("value:Q", title=title, format=".4g")] + (["stage:N"] if staged else []),
    }
    if staged:
        # Every chart of a run gives a stage the same colour; the legend names this curve's stages, in run order.
        drawn = list(dict.fromkeys(data["stage"].dropna().astype(str)))
        stages = list(dict.fromkeys(trained_stages(frame) + drawn))
        encoding["color"] = alt.Color(
            "stage:N", scale=alt.Scale(domain=stages),
            legend=alt.Legend(orient="bottom", title=None, values=[s for s in stages if s in drawn]),
        )
    size = {"title": chart_title(title), "height": CURVE_HEIGHT, "autosize": CURVE_AUTOSIZE}
    line = alt.Chart(data).mark_line(point=True).encode(**encoding)
    # Only the boundaries this curve crosses: one outside its steps would stretch the axis over steps without a value.
    low, high = data[x].min(), data[x].max()
    boundaries = [(at, stage) for at, stage in stage_boundaries(frame) if low < at < high]
    if not boundaries:
        return line.properties(**size)
    marks = pd.DataFrame(boundaries, columns=["x", "stage"])
    rule = alt.Chart(marks).mark_rule(strokeDash=[4, 3], color="#888").encode(x="x:Q")
    middle = (low + high) / 2
    labels = [
        # Above the plot, so no curve runs through them; right of the rule in the plot's left half, left of it in the
        # right half, so none runs past the plot's edge.
        alt.Chart(marks.iloc[[row]]).mark_text(
            align="left" if at <= middle else "right", dx=3 if at <= middle else -3, baseline="bottom", color="#666"
        ).encode(x="x:Q", y=alt.value(-3 - row * LABEL_ROW_PX), text="stage:N")
        for row, at in enumerate(marks["x"])
    ]
    return alt.layer(line, rule, *labels).properties(**size)


# Streamlit's theme draws a label 15 px high: rows of LABEL_ROW_PX overlapped where two runs' boundaries sit close.
COMPARE_LABEL_ROW_PX = 16
# One colour per compared run, far apart (Streamlit's default palette starts with two blues).
RUN_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf"]


def comparison_chart(aligned: pd.DataFrame, boundaries: pd.DataFrame, title: str, runs: list[str]) -> alt.LayerChart:
    """One metric of several runs on shared axes (core.run_comparison.align_curves's frame): a line per run, one
    colour per run in `runs` order (the same in every chart, whether or not this run logs the metric), a dashed rule
    where a run's stage begins, named above the plot as in `curve_chart`."""
    staged = aligned["stage"].notna().any() or not boundaries.empty
    points = alt.OverlayMarkDef(size=36, filled=False, strokeWidth=1.5)
    line = alt.Chart(aligned).mark_line(point=points, strokeWidth=2, opacity=0.85).encode(
        x=alt.X("x:Q", title="step (all stages)" if staged else "step", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False), axis=alt.Axis(format="~g")),
        color=alt.Color("run:N", scale=alt.Scale(domain=runs, range=RUN_COLOURS),
                        legend=alt.Legend(orient="bottom", title=None, columns=1, labelLimit=0)),
        # A hollow shape per run as well: where two runs' curves coincide (a shared warm start), both still show.
        shape=alt.Shape("run:N", scale=alt.Scale(domain=runs), legend=None),
        tooltip=["run:N", "step:Q", alt.Tooltip("value:Q", title=title, format=".4g")] + (["stage:N"] if staged else []),
    )
    size = {"title": chart_title(title), "height": CURVE_HEIGHT, "autosize": CURVE_AUTOSIZE}
    if aligned.empty:
        return alt.layer(line).properties(**size)
    low, high = aligned["x"].min(), aligned["x"].max()
    marks = boundaries[(boundaries["x"] > low) & (boundaries["x"] < high)].reset_index(drop=True)
    if marks.empty:
        return alt.layer(line).properties(**size)
    # A boundary every picked run shares is named by its stage alone; else by the runs it belongs to as well.
    shared = marks["runs"] == ", ".join(runs)  # shared_boundaries lists a mark's runs in the picked order
    marks["label"] = marks["stage"].where(shared, marks["stage"] + " (" + marks["runs"] + ")")
    rule = alt.Chart(marks).mark_rule(strokeDash=[4, 3], color="#888").encode(
        x="x:Q", tooltip=[alt.Tooltip("stage:N", title="stage begins"), alt.Tooltip("runs:N", title="in runs")])
    middle = (low + high) / 2
    labels = [
        alt.Chart(marks.iloc[[row]]).mark_text(
            align="left" if at <= middle else "right", dx=3 if at <= middle else -3, baseline="bottom", color="#666"
        ).encode(x="x:Q", y=alt.value(-3 - row * COMPARE_LABEL_ROW_PX), text="label:N")
        for row, at in enumerate(marks["x"])
    ]
    return alt.layer(line, rule, *labels).properties(**size)


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch from an ISO timestamp or a number; None when unreadable."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def format_duration(seconds: float) -> str:
    """
    >>> format_duration(42), format_duration(125), format_duration(3 * 3600 + 60)
    ('42 s', '2 min 5 s', '3 h 1 min')
    """
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def step_seconds(metrics: list[dict[str, Any]], recent: int = 10) -> float | None:
    """Seconds per optimizer step: the median over the last `recent` logged intervals, None with fewer than two.

    The median, not the mean of all steps: a first step that includes warm-up, an evaluation or a checkpoint
    save between two logs would otherwise swing the estimate.

    >>> step_seconds([{"step": 1, "time": 0.0}, {"step": 2, "time": 10.0}, {"step": 3, "time": 20.0}, {"step": 4, "time": 90.0}])
    10.0
    >>> step_seconds([{"step": 2, "time": 0.0}, {"step": 4, "time": 30.0}, {"step": 4, "time": 31.0, "eval_loss": 1.0}])
    15.0
    """
    last_time: dict[int, float] = {}
    for m in metrics:
        if isinstance(m.get("time"), (int, float)) and isinstance(m.get("step"), int) and m["step"] not in last_time:
            last_time[m["step"]] = float(m["time"])  # the first line of a step: an eval line after it adds no step
    steps = sorted(last_time)
    rates = [
        (last_time[b] - last_time[a]) / (b - a)
        for a, b in zip(steps, steps[1:])
        if last_time[b] >= last_time[a]  # a resume restarts the clock: skip the gap
    ][-recent:]
    if not rates:
        return None
    rates.sort()
    middle = len(rates) // 2
    return rates[middle] if len(rates) % 2 else (rates[middle - 1] + rates[middle]) / 2


def eta_seconds(status: dict[str, Any], metrics: list[dict[str, Any]], now: float) -> float | None:
    """Seconds left, from the recent pace (`step_seconds`) or, before two logged steps, the pace since the
    start; None when unknown. Between logs it counts down, but never below the steps still to train.

    >>> eta_seconds({"step": 2, "total": 6}, [{"step": 1, "time": 100.0}, {"step": 2, "time": 110.0}], now=110.0)
    40.0
    >>> eta_seconds({"step": 2, "total": 6}, [{"step": 1, "time": 100.0}, {"step": 2, "time": 110.0}], now=150.0)
    30.0
    >>> eta_seconds({"step": 0, "total": 6}, [], now=5.0) is None
    True
    >>> eta_seconds({"step": 2, "total": 6, "stage": "pairs", "stages": ["warm_start", "pairs", "dpo"], "started": 0.0},
    ...             [{"step": 1, "time": 1.0, "stage": "warm_start"}, {"step": 2, "time": 2.0, "stage": "warm_start"}], now=100.0) is None
    True
    """
    step, total = status.get("step") or 0, status.get("total") or 0
    if status.get("stage"):  # steps count from 1 in each stage: pace the current one only
        metrics = [m for m in metrics if m.get("stage") == status["stage"]]
    if not total or step >= total:
        return None if not total else 0.0
    per_step = step_seconds(metrics)
    timed = [(m["step"], m["time"]) for m in metrics if isinstance(m.get("time"), (int, float)) and isinstance(m.get("step"), int)]
    if per_step is not None and timed:
        last_step, last_time = max(timed)
        last_step = max(last_step, step)
        left = total - last_step
        since_last = max(0.0, now - last_time)
        return max(per_step * (left - 1) if left > 1 else 0.0, per_step * left - since_last)
    stages = status.get("stages") or []
    if status.get("stage") and stages and status["stage"] != stages[0]:
        # The run's start is not this stage's: a pace since then would count the stages before it (a pairs
        # stage logs no metric line until it ends, so this is all it would ever have).
        return None
    started = parse_time(status.get("started"))
    if started and step > 0:
        return (now - started) / step * (total - step)
    return None


# ---------------------------------------------------------------------------------------------- evaluation


def scalar_metrics(models: dict[str, dict[str, Any]], baseline: str = "base") -> pd.DataFrame:
    """One row per scalar metric, one column per model (the baseline, tuned), plus the change.

    >>> scalar_metrics({"base": {"n": 4, "accuracy": 0.5, "confusion": {}}, "tuned": {"n": 4, "accuracy": 0.75}}).to_dict("index")
    {'n': {'base': 4.0, 'tuned': 4.0, 'change': 0.0}, 'accuracy': {'base': 0.5, 'tuned': 0.75, 'change': 0.25}}
    """
    names: list[str] = []
    for report in models.values():
        for key, value in (report or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in names:
                names.append(key)
    table = pd.DataFrame(
        {model: [_number((models[model] or {}).get(n)) for n in names] for model in models},
        index=pd.Index(names, name="metric"),
    )
    if {baseline, "tuned"} <= set(table.columns):
        table["change"] = table["tuned"] - table[baseline]
    return table


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def confusion_frame(confusion: dict[str, dict[str, int]]) -> pd.DataFrame:
    """Long form of a confusion matrix (rows = expected, columns = predicted).

    >>> confusion_frame({"Yes": {"Yes": 3, "No": 1}, "No": {"Yes": 0, "No": 4}}).values.tolist()
    [['Yes', 'Yes', 3], ['Yes', 'No', 1], ['No', 'Yes', 0], ['No', 'No', 4]]
    """
    rows = [
        (str(expected), str(predicted), int(count or 0))
        for expected, row in (confusion or {}).items()
        if isinstance(row, dict)
        for predicted, count in row.items()
    ]
    return pd.DataFrame(rows, columns=["expected", "predicted", "count"])


def confusion_chart(confusion: dict[str, dict[str, int]], title: str) -> alt.LayerChart:
    """A heatmap with the counts written in the cells."""
    data = confusion_frame(confusion)
    expected = list(dict.fromkeys(data["expected"]))
    predicted = list(dict.fromkeys(data["predicted"]))
    base = alt.Chart(data).encode(
        x=alt.X("predicted:N", sort=predicted, title="predicted", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("expected:N", sort=expected, title="expected"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("count:Q", scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=["expected", "predicted", "count"],
    )
    high = float(data["count"].max()) if len(data) else 0.0
    labels = base.mark_text(fontSize=14).encode(
        text="count:Q",
        color=alt.condition(alt.datum.count > high / 2, alt.value("white"), alt.value("black")),
    )
    height = 45 * max(len(expected), 1)
    return alt.layer(cells.properties(height=height), labels.properties(height=height)).properties(title=title)


def per_field_frame(models: dict[str, dict[str, Any]], key: str = "field_accuracy") -> pd.DataFrame:
    """Long form of a per-field metric (`field_accuracy`, `macro_f1`): every field any model reports, for every
    model, a missing score as 0 (a model that wrote no usable JSON scores nothing, and the bar says so).

    >>> per_field_frame({"base": {"field_accuracy": {}}, "tuned": {"field_accuracy": {"scene": 0.9}}}).values.tolist()
    [['base', 'scene', 0.0], ['tuned', 'scene', 0.9]]
    """
    fields = list(dict.fromkeys(name for report in models.values() for name in ((report or {}).get(key) or {})))
    rows = []
    for model, report in models.items():
        values = (report or {}).get(key) or {}
        for name in fields:
            value = values.get(name)
            number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
            rows.append((model, str(name), number))
    return pd.DataFrame(rows, columns=["model", "field", "value"])


def per_field_chart(models: dict[str, dict[str, Any]], key: str = "field_accuracy", title: str = "per-field accuracy",
                    baseline: str = "base") -> alt.LayerChart:
    """Grouped horizontal bars, one group per schema field, base against tuned, each labelled with its value
    (a 0 has no visible bar, so its label is what shows it)."""
    data = per_field_frame(models, key)
    base = alt.Chart(data).encode(
        y=alt.Y("field:N", title=None, sort=list(dict.fromkeys(data["field"]))),
        yOffset="model:N",
        x=alt.X("value:Q", scale=alt.Scale(domain=[0, 1.15]), title=title, axis=alt.Axis(values=[0, 0.25, 0.5, 0.75, 1])),
        tooltip=["field", "model", alt.Tooltip("value:Q", title=title, format=".3f")],
    )
    bars = base.mark_bar().encode(
        color=alt.Color("model:N", scale=alt.Scale(domain=[baseline, "tuned"], range=["#9aa5b1", "#ff4b4b"]))
    )
    labels = base.mark_text(align="left", dx=3, fontSize=11).encode(text=alt.Text("value:Q", format=".2f"))
    return alt.layer(bars, labels).properties(title=title, height=max(120, 44 * data["field"].nunique()))


def missing_data_notes(models: dict[str, dict[str, Any]]) -> list[str]:
    """Why a model's charts are empty or all zero, one line per model: nothing parseable came out of it.

    >>> missing_data_notes({"base": {"n": 8, "json_rate": 0.0, "unparseable": 8}, "tuned": {"n": 8, "json_rate": 1.0}})
    ['base: no valid JSON from this model yet (8 of 8 answers unparseable), so every field scores 0']
    >>> missing_data_notes({"base": {"n": 4, "accuracy": 0.0, "unparseable": 4}})
    ['base: no answer in a <SOLUTION> block from this model yet (4 of 4 unparseable)']
    """
    notes = []
    for name, report in models.items():
        report = report or {}
        n, unparseable = report.get("n") or 0, report.get("unparseable") or 0
        if not n:
            notes.append(f"{name}: no sample was scored")
        elif "json_rate" in report and not report.get("json_rate"):
            notes.append(f"{name}: no valid JSON from this model yet ({unparseable} of {n} answers unparseable), so every field scores 0")
        elif "accuracy" in report and unparseable >= n:
            notes.append(f"{name}: no answer in a <SOLUTION> block from this model yet ({unparseable} of {n} unparseable)")
    return notes


# The metric that sums a report up, in order of preference: image accuracy, then video JSON validity.
HEADLINE_METRICS = (("accuracy", "accuracy"), ("valid_rate", "valid JSON rate"), ("field_accuracy_mean", "field accuracy"))


def headline(models: dict[str, dict[str, Any]], baseline: str = "base") -> dict[str, Any] | None:
    """The baseline (the base model, or a stage's weights) against tuned on the report's main metric, with the
    gain; None without both models. `base` holds the baseline's figure, whatever its name.

    >>> headline({"base": {"accuracy": 0.5}, "tuned": {"accuracy": 0.875}})
    {'metric': 'accuracy', 'label': 'accuracy', 'base': 0.5, 'tuned': 0.875, 'gain': 0.375}
    """
    base, tuned = models.get(baseline) or {}, models.get("tuned") or {}
    for key, label in HEADLINE_METRICS:
        if isinstance(base.get(key), (int, float)) and isinstance(tuned.get(key), (int, float)):
            return {"metric": key, "label": label, "base": base[key], "tuned": tuned[key], "gain": round(tuned[key] - base[key], 3)}
    return None
