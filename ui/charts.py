"""Charts and tables built from run files: training curves, ETA, evaluation metrics, confusion matrices.

Pure functions of plain data (no Streamlit), so they are tested without a browser.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

import altair as alt
import pandas as pd

# Curves worth a chart, in display order; `rewards/<name>/mean` columns are inserted after `loss`.
CURVES = (
    ("loss", "loss"),
    ("reward", "total reward"),
    ("eval_loss", "eval loss"),
    ("mean_token_accuracy", "token accuracy"),
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
    """
    columns = list(columns)
    found = [(c, t) for c, t in CURVES if c in columns]
    rewards = [(c, f"reward: {reward_label(m.group(1))}") for c in columns if (m := _REWARD_COLUMN.match(c))]
    at = 1 if found and found[0][0] == "loss" else 0
    return found[:at] + rewards + found[at:]


def metrics_frame(metrics: list[dict[str, Any]]) -> pd.DataFrame:
    """The metrics log as a frame with a numeric `step`; rows without a step are dropped."""
    frame = pd.DataFrame(metrics)
    if frame.empty or "step" not in frame:
        return pd.DataFrame(columns=["step"])
    frame = frame[pd.to_numeric(frame["step"], errors="coerce").notna()].copy()
    frame["step"] = frame["step"].astype(int)
    return frame


def curve_chart(frame: pd.DataFrame, column: str, title: str) -> alt.Chart:
    """A small line chart of one metric against the optimizer step (coloured by curriculum stage if any)."""
    keep = ["step", column] + (["stage"] if "stage" in frame else [])
    data = frame[keep].rename(columns={column: "value"})
    data = data[pd.to_numeric(data["value"], errors="coerce").notna()]
    encoding: dict[str, Any] = {
        "x": alt.X("step:Q", title="step", axis=alt.Axis(tickMinStep=1, format="d")),
        "y": alt.Y("value:Q", title=None, scale=alt.Scale(zero=False), axis=alt.Axis(format="~g")),
        "tooltip": ["step:Q", alt.Tooltip("value:Q", title=title, format=".4g")],
    }
    if "stage" in data and data["stage"].notna().any():
        encoding["color"] = alt.Color("stage:N", legend=alt.Legend(orient="bottom", title=None))
    return alt.Chart(data).mark_line(point=True).encode(**encoding).properties(title=title, height=170)


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
    """
    step, total = status.get("step") or 0, status.get("total") or 0
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
    started = parse_time(status.get("started"))
    if started and step > 0:
        return (now - started) / step * (total - step)
    return None


# ---------------------------------------------------------------------------------------------- evaluation


def scalar_metrics(models: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per scalar metric, one column per model (base, tuned), plus the change.

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
    if {"base", "tuned"} <= set(table.columns):
        table["change"] = table["tuned"] - table["base"]
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
    """Long form of a per-field metric (`field_accuracy`, `macro_f1`) for each model that reports it.

    >>> per_field_frame({"base": {"field_accuracy": {"scene": 0.5}}, "tuned": {"field_accuracy": {"scene": 0.9}}}).values.tolist()
    [['base', 'scene', 0.5], ['tuned', 'scene', 0.9]]
    """
    rows = [
        (model, str(name), float(value))
        for model, report in models.items()
        for name, value in ((report or {}).get(key) or {}).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    return pd.DataFrame(rows, columns=["model", "field", "value"])


def per_field_chart(models: dict[str, dict[str, Any]], key: str = "field_accuracy", title: str = "per-field accuracy") -> alt.Chart:
    """Grouped horizontal bars: one group per schema field, base against tuned."""
    data = per_field_frame(models, key)
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("field:N", title=None, sort=list(dict.fromkeys(data["field"]))),
            yOffset="model:N",
            x=alt.X("value:Q", scale=alt.Scale(domain=[0, 1]), title=title),
            color=alt.Color("model:N", scale=alt.Scale(domain=["base", "tuned"], range=["#9aa5b1", "#ff4b4b"])),
            tooltip=["field", "model", alt.Tooltip("value:Q", title=title, format=".3f")],
        )
        .properties(title=title, height=max(120, 44 * data["field"].nunique()))
    )
