"""Runs side by side: what differs between their configs and provenance, their curves on one step axis, and their
evaluations in one table. Pure functions of what the run folders hold (read through `RunDir`); the Runs page
(ui/run_comparison.py) draws them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from core.provenance import read_provenance
from core.runs import RunDir
from core.verdict import format_interval

# What a diff cell shows for a key one run has and another lacks.
ABSENT = "(not set)"
NOT_EVALUATED = "not evaluated"
NO_VERDICT = "no verdict (report without intervals)"
# Provenance keys that differ between any two launches whatever made them: the launch's own times, the command
# line (it names the run's folder), the config's hash (the config diff says what differs), earlier launches.
LAUNCH_ONLY = ("started", "ended", "state", "command", "config_sha256", "earlier_launches")


def flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys; lists and other values stay whole.

    >>> flatten({"train": {"learning_rate": 1e-4, "steps": 3}, "model": {"name": "m"}, "tags": ["a"], "empty": {}})
    {'train.learning_rate': 0.0001, 'train.steps': 3, 'model.name': 'm', 'tags': ['a'], 'empty': {}}
    """
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def cell_text(value: Any) -> str:
    """A value as a diff cell shows it: strings as they are, anything else as JSON (null, true, 0.0001, [..]).

    >>> cell_text("cosine"), cell_text(7e-4), cell_text(None), cell_text(True), cell_text([1, 2])
    ('cosine', '0.0007', 'null', 'true', '[1, 2]')
    """
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def diff_table(documents: Mapping[str, Mapping[str, Any]], skip: tuple[str, ...] = ()) -> pd.DataFrame:
    """The dotted keys whose values differ between the documents, one column per document (run), in the keys'
    first-seen order; a key a document lacks reads `(not set)`. Empty (no rows) when they are all the same.
    A key under one of `skip` (its dotted prefix) is left out.

    >>> table = diff_table({"a": {"train": {"learning_rate": 1e-4, "seed": 42}, "x": 1},
    ...                     "b": {"train": {"learning_rate": 5e-4, "seed": 42}}})
    >>> table.to_dict("index")
    {'train.learning_rate': {'a': '0.0001', 'b': '0.0005'}, 'x': {'a': '1', 'b': '(not set)'}}
    >>> diff_table({"a": {"k": 1}, "b": {"k": 1}}).empty
    True
    >>> list(diff_table({"a": {"started": 1, "seed": 1}, "b": {"started": 2, "seed": 2}}, skip=("started",)).index)
    ['seed']
    """
    flats = {name: flatten(document) for name, document in documents.items()}
    keys = [k for k in dict.fromkeys(k for flat in flats.values() for k in flat)
            if not any(k == s or k.startswith(f"{s}.") for s in skip)]
    cells = {k: {name: cell_text(flat[k]) if k in flat else ABSENT for name, flat in flats.items()} for k in keys}
    rows = {k: row for k, row in cells.items() if len(set(row.values())) > 1}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(flats), dtype=object)
    table.index.name = "key"
    return table


def config_diff(runs: list[RunDir]) -> tuple[pd.DataFrame, list[str]]:
    """The resolved configs' differing keys (`diff_table`), and the runs whose config.yaml could not be read
    (left out of the table)."""
    configs, unreadable = {}, []
    for run in runs:
        try:
            configs[run.id] = run.read_config()
        except (OSError, ValueError):
            unreadable.append(run.id)
    return diff_table(configs), unreadable


def provenance_diff(runs: list[RunDir]) -> tuple[pd.DataFrame, list[str]]:
    """What made the runs, where it differs (library versions, code commit, data fingerprint, model revision,
    hardware...), without what differs between any two launches (`LAUNCH_ONLY`); and the runs without a
    provenance.json (left out of the table)."""
    documents, without = {}, []
    for run in runs:
        document = read_provenance(run)
        if document is None:
            without.append(run.id)
        else:
            documents[run.id] = document
    return diff_table(documents, skip=LAUNCH_ONLY), without


def align_curves(frames: Mapping[str, pd.DataFrame], column: str) -> pd.DataFrame:
    """One metric of several runs on one step axis, long form: `run`, `step` (the run's own), `x` (the step on the
    shared axis: `run_step` where a run's stages are laid end to end, else `step`), `stage` and `value`, sorted by
    `x`. Each frame is a run's metrics with a numeric `step` (ui.charts.metrics_frame makes them); rows without a
    number in `column` are dropped, and a run without the column adds nothing (`missing_curves` names it).

    >>> short = pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]})
    >>> long = pd.DataFrame({"step": [1, 2, 3], "loss": [0.9, None, 0.2]})
    >>> align_curves({"a": short, "b": long}, "loss")[["run", "x", "value"]].values.tolist()
    [['a', 1, 1.0], ['b', 1, 0.9], ['a', 2, 0.5], ['b', 3, 0.2]]
    """
    parts = []
    for name, frame in frames.items():
        if column not in frame or frame.empty:
            continue
        x = frame["run_step"] if "run_step" in frame else frame["step"]
        stage = frame["stage"] if "stage" in frame else pd.Series(None, index=frame.index, dtype=object)
        part = pd.DataFrame({"run": name, "step": frame["step"], "x": x, "stage": stage,
                             "value": pd.to_numeric(frame[column], errors="coerce")})
        parts.append(part.dropna(subset=["value"]))
    if not parts:
        return pd.DataFrame(columns=["run", "step", "x", "stage", "value"])
    aligned = pd.concat(parts, ignore_index=True)
    aligned["x"] = aligned["x"].astype(int)
    return aligned.sort_values(["x", "run"], kind="stable").reset_index(drop=True)


def missing_curves(frames: Mapping[str, pd.DataFrame], column: str) -> list[str]:
    """The runs that log no number for `column`.

    >>> missing_curves({"a": pd.DataFrame({"step": [1], "reward": [0.5]}), "b": pd.DataFrame({"step": [1]})}, "reward")
    ['b']
    """
    return [name for name, frame in frames.items()
            if column not in frame or pd.to_numeric(frame[column], errors="coerce").dropna().empty]


def shared_boundaries(boundaries: Mapping[str, list[tuple[float, str]]]) -> pd.DataFrame:
    """Stage boundaries of several runs (each run's `(x, stage)`, as ui.charts.stage_boundaries gives them) as one
    mark each: `x`, `stage`, and `runs`, the runs whose stage begins there.

    >>> shared_boundaries({"a": [(150.5, "grpo")], "b": [(150.5, "grpo")], "c": [(20.5, "grpo")]}).values.tolist()
    [[20.5, 'grpo', 'c'], [150.5, 'grpo', 'a, b']]
    """
    found: dict[tuple[float, str], list[str]] = {}
    for name, marks in boundaries.items():
        for x, stage in marks:
            found.setdefault((float(x), str(stage)), []).append(name)
    rows = [(x, stage, ", ".join(names)) for (x, stage), names in sorted(found.items())]
    return pd.DataFrame(rows, columns=["x", "stage", "runs"])


def _figure(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def evaluation_rows(run_id: str, reports: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per evaluation report of a run (its split, and the baseline when a stage's weights stood in for the
    base model): the headline metric of base and tuned with their 95 % intervals, the difference's interval, and
    the verdict's words as evaluation wrote them. A run without a report has one row saying `not evaluated`.

    >>> report = {"split": "test", "models": {"base": {"accuracy": 0.5, "ci95": {"accuracy": [0.364, 0.636]}},
    ...                                       "tuned": {"accuracy": 0.875, "ci95": {"accuracy": [0.753, 0.941]}}},
    ...           "headline": {"metric": "accuracy", "label": "accuracy", "base": 0.5, "tuned": 0.875,
    ...                        "difference": 0.375, "ci95": [0.2, 0.52], "verdict": "better"}}
    >>> row = evaluation_rows("r1", {"test": report})[0]
    >>> row["base"], row["base 95% CI"], row["tuned"], row["tuned 95% CI"], row["difference (95% CI)"], row["verdict"]
    ('0.500', '[0.364, 0.636]', '0.875', '[0.753, 0.941]', '+0.375 [+0.200, +0.520]', 'better')
    >>> evaluation_rows("r2", {})[0]["verdict"]
    'not evaluated'
    """
    if not reports:
        return [{"run": run_id, "split": "", "against": "", "metric": "", "base": "", "base 95% CI": "", "tuned": "",
                 "tuned 95% CI": "", "difference (95% CI)": "", "verdict": NOT_EVALUATED}]
    rows = []
    for name, report in reports.items():
        models = report.get("models") or {}
        base, tuned = models.get("base") or {}, models.get("tuned") or {}
        headline = report.get("headline") if isinstance(report.get("headline"), Mapping) else {}
        metric = headline.get("metric")
        if metric is None:  # a report from before headlines: its first metric both models have
            metric = next((k for k in ("accuracy", "valid_rate", "field_accuracy_mean")
                           if isinstance(base.get(k), (int, float)) and isinstance(tuned.get(k), (int, float))), None)
        base_value = headline.get("base", base.get(metric)) if metric else None
        tuned_value = headline.get("tuned", tuned.get(metric)) if metric else None
        difference = headline.get("difference")
        if difference is None and isinstance(base_value, (int, float)) and isinstance(tuned_value, (int, float)):
            difference = tuned_value - base_value
        change = f"{difference:+.3f}" if isinstance(difference, (int, float)) else ""
        change = f"{change} {format_interval(headline.get('ci95'), signed=True)}".strip()
        word = headline.get("verdict") or report.get("verdict")
        rows.append({
            "run": run_id, "split": str(report.get("split") or name), "against": str(report.get("baseline") or "base"),
            "metric": str(headline.get("label") or metric or ""),
            "base": _figure(base_value), "base 95% CI": format_interval((base.get("ci95") or {}).get(metric)),
            "tuned": _figure(tuned_value), "tuned 95% CI": format_interval((tuned.get("ci95") or {}).get(metric)),
            "difference (95% CI)": change,
            "verdict": str(word) if word else (NO_VERDICT if metric else "no model results"),
        })
    return rows


def evaluation_table(runs: list[RunDir]) -> pd.DataFrame:
    """`evaluation_rows` of every run, one table; an unreadable eval folder reads as not evaluated."""
    rows = []
    for run in runs:
        try:
            reports = run.eval_reports()
        except OSError:
            reports = {}
        rows += evaluation_rows(run.id, reports)
    return pd.DataFrame(rows, dtype=object)
