"""Runs side by side on the Runs page: pick two or more runs, then their curves on shared axes, the config keys
that differ, their evaluations in one table and what differs in what made them (provenance). The logic is in
core/run_comparison.py; this only lays it out.
"""

from __future__ import annotations

import streamlit as st

from core.run_comparison import (
    align_curves,
    config_diff,
    evaluation_table,
    missing_curves,
    provenance_diff,
    shared_boundaries,
)
from core.runs import RunDir
from ui import charts

PICK_KEY = "runs:compare"


def compare_runs(runs: list[RunDir]) -> None:
    """The comparison of the runs the user picks among `runs` (the runs table's)."""
    ids = [run.id for run in runs]
    # A picked run that was archived or deleted since: drop it, or the widget refuses a value it has no option for.
    if PICK_KEY in st.session_state:
        st.session_state[PICK_KEY] = [run_id for run_id in st.session_state[PICK_KEY] if run_id in ids]
    picked_ids = st.multiselect("Runs to compare", ids, key=PICK_KEY, placeholder="Pick two or more runs")
    if len(picked_ids) < 2:
        st.info(f"Pick two or more runs to compare them ({len(picked_ids)} picked).", icon=":material/compare_arrows:")
        return
    picked = [run for run in runs if run.id in picked_ids]
    picked.sort(key=lambda run: picked_ids.index(run.id))
    curves(picked)
    config_differences(picked)
    evaluations(picked)
    provenance_differences(picked)


def curves(runs: list[RunDir], columns: int = 2) -> None:
    """One chart per metric any picked run logs, every run on it in its own colour; the runs that lack the metric
    are named under it."""
    st.markdown("#### Curves")
    frames = {run.id: charts.metrics_frame(run.read_metrics()) for run in runs}
    present = list(dict.fromkeys(column for frame in frames.values() for column in frame.columns))
    metrics = charts.curve_columns(present)
    if not metrics:
        st.caption("None of these runs has logged a step yet.")
        return
    boundaries = shared_boundaries({name: charts.stage_boundaries(frame) for name, frame in frames.items()})
    ids = [run.id for run in runs]
    with st.container(key="compare-curves"):
        cols = st.columns(columns)
        for index, (column, title) in enumerate(metrics):
            with cols[index % columns]:
                st.altair_chart(charts.comparison_chart(align_curves(frames, column), boundaries, title, ids),
                                width="stretch")
                lacking = missing_curves(frames, column)
                if lacking:
                    st.caption(f"No {title} in {', '.join(lacking)}.")


def config_differences(runs: list[RunDir]) -> None:
    st.markdown("#### Config: the keys that differ")
    table, unreadable = config_diff(runs)
    for run_id in unreadable:
        st.warning(f"{run_id}: its config.yaml could not be read, so it is left out of this table.")
    if len(runs) - len(unreadable) < 2:
        return
    if table.empty:
        st.caption("The configs are identical.")
        return
    st.dataframe(table, width="stretch", key="compare-config")


def evaluations(runs: list[RunDir]) -> None:
    st.markdown("#### Evaluation: tuned against base, per split")
    st.dataframe(evaluation_table(runs), hide_index=True, width="stretch", key="compare-evaluation")
    st.caption("Intervals are 95 %; the verdict compares tuned with base through the interval of their difference, "
               "as each run's evaluation report wrote it.")


def provenance_differences(runs: list[RunDir]) -> None:
    st.markdown("#### Provenance: what differs in what made the runs")
    table, without = provenance_diff(runs)
    for run_id in without:
        st.warning(f"{run_id}: no provenance recorded (a run from before runs recorded what made them, or one whose "
                   "trainer never started): its code, library versions, data fingerprint and model revision are unknown.")
    if len(runs) - len(without) < 2:
        return
    if table.empty:
        st.caption("Same code, libraries, hardware, data and model weights.")
        return
    st.dataframe(table, width="stretch", key="compare-provenance")
