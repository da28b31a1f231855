"""The training curves' Vega-Lite specs, for each stage layout a run can log: one stage; a warm start then GRPO;
SFT stages, then pairs (no step: its summary is logged at step 0), then DPO.

Streamlit gives a spec that names no `autosize` the "fit" autosize, which makes its height the whole chart's:
the title, the axes and the stage legend then take all of it, and the plot is drawn 0 px high (a flat line, no
y axis). tests/test_browser.py checks the same charts as Chromium draws them.
"""

from __future__ import annotations

import pytest

from ui.charts import curve_chart, curve_columns, metrics_frame

# Streamlit cuts a title at the chart's width less 40 px: in a 2-column grid at 1400 px, about 30 characters.
LONGEST_TITLE_LINE = 30


def one_stage() -> list[dict]:
    return [{"step": s, "loss": 7.2 / s, "learning_rate": 1e-4, "grad_norm": 1.0} for s in range(1, 6)]


def warm_start_then_grpo() -> list[dict]:
    metrics = [{"step": s, "stage": "warm_start", "loss": 7.2 * 0.45**s, "learning_rate": 1e-4} for s in range(1, 7)]
    return metrics + [
        {"step": s, "stage": "grpo", "loss": 0.07 + 0.01 * s, "reward": 0.2 * s, "rewards/format_reward/mean": 0.1 * s,
         "learning_rate": 1e-4}
        for s in range(1, 5)
    ]


def sft_pairs_dpo() -> list[dict]:
    metrics = [{"step": s, "stage": stage, "loss": 7.2 * 0.5**s, "learning_rate": 1e-4}
               for stage in ("sft_short", "sft_long") for s in range(1, 4)]
    metrics.append({"step": 0, "stage": "pairs", "pairs/pairs": 12})  # the pairs stage trains no step
    return metrics + [
        {"step": s, "stage": "dpo", "loss": 0.69 - 0.05 * s, "rewards/chosen": 0.1 * s, "rewards/rejected": -0.1 * s,
         "rewards/margins": 0.2 * s, "rewards/accuracies": 0.25 * s, "learning_rate": 1e-5}
        for s in range(1, 5)
    ]


LAYOUTS = {"one stage": one_stage, "warm start then grpo": warm_start_then_grpo, "sft, pairs, dpo": sft_pairs_dpo}


def chart_specs(metrics: list[dict]) -> dict[str, dict]:
    frame = metrics_frame(metrics)
    return {column: curve_chart(frame, column, title).to_dict() for column, title in curve_columns(frame.columns)}


def units(spec: dict) -> list[dict]:
    return spec.get("layer", [spec])


def stage_labels(spec: dict) -> list[tuple[str, float, float]]:
    """(stage, x, y in px) of each stage label the chart writes."""
    labels = []
    for unit in units(spec):
        if (unit.get("mark") or {}).get("type") != "text":
            continue
        encoding = unit["encoding"]
        assert "value" in encoding["y"], f"a stage label is placed by a data field, not a pixel row: {encoding['y']}"
        for row in spec["datasets"][unit["data"]["name"]]:
            labels.append((row[encoding["text"]["field"]], row[encoding["x"]["field"]], encoding["y"]["value"]))
    return labels


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_curve_has_a_plot_of_its_own_height_and_a_quantitative_y_axis(layout):
    specs = chart_specs(LAYOUTS[layout]())
    assert "loss" in specs and "learning_rate" in specs, sorted(specs)
    for column, spec in specs.items():
        where = f"{layout}: {column}"
        # The height must be the plot's: an autosize Streamlit would not replace, that does not fit the height.
        autosize = spec.get("autosize")
        assert isinstance(autosize, dict), f"{where}: no autosize, so Streamlit fits the whole chart into the height"
        assert autosize.get("type") in ("fit-x", "pad", "none"), f"{where}: autosize {autosize} squeezes the plot"
        height = spec.get("height")
        assert isinstance(height, (int, float)) and height >= 120, f"{where}: height {height}"
        for unit in units(spec):
            assert isinstance(unit.get("height", 0), (int, float)), f"{where}: discrete height {unit['height']}"
            y = unit.get("encoding", {}).get("y", {})
            assert "field" not in y or y["type"] == "quantitative", f"{where}: a discrete y {y}"
        (curve,) = [u for u in units(spec) if (u.get("mark") or {}).get("type") == "line"]
        assert curve["encoding"]["y"] == {**curve["encoding"]["y"], "field": "value", "type": "quantitative"}


def test_stage_boundaries_are_ruled_and_their_labels_never_share_a_row():
    """Each boundary a stage that trained steps begins at has a rule and a label; labels have a row each, and the
    pairs stage (no width: DPO's first step follows the last step before it) has none."""
    expected = {"one stage": [], "warm start then grpo": ["grpo"], "sft, pairs, dpo": ["sft_long", "dpo"]}
    for layout, make in LAYOUTS.items():
        specs = chart_specs(make())
        loss = specs["loss"]
        assert [label for label, _, _ in stage_labels(loss)] == expected[layout], f"{layout}: {stage_labels(loss)}"
        rules = [u for u in units(loss) if (u.get("mark") or {}).get("type") == "rule"]
        ruled = [row["x"] for rule in rules for row in loss["datasets"][rule["data"]["name"]]]
        assert ruled == [x for _, x, _ in stage_labels(loss)], f"{layout}: rules {ruled}, labels {stage_labels(loss)}"
        for column, spec in specs.items():
            labels = stage_labels(spec)
            rows = [y for _, _, y in labels]
            assert len(set(rows)) == len(rows), f"{layout}: {column}: labels share a row: {labels}"
            assert "pairs" not in [label for label, _, _ in labels], f"{layout}: {column}: a label for zero-width pairs"


def test_titles_fit_the_chart_on_wrapped_lines():
    """Streamlit cuts a title at the chart's width less 40 px; a long title is wrapped into short lines instead."""
    frame = metrics_frame(sft_pairs_dpo() + [{"step": 5, "stage": "dpo", "eval_loss": 0.5, "mean_token_accuracy": 0.9,
                                               "grad_norm": 0.3, "reward": 1.0}])
    titles = {}
    for column, title in curve_columns(frame.columns):
        spec_title = curve_chart(frame, column, title).to_dict()["title"]
        lines = [spec_title] if isinstance(spec_title, str) else [*spec_title["text"], *spec_title.get("subtitle", [])]
        titles[title] = lines
        assert " ".join(lines) == title, f"{title!r} drawn as {lines}"
        assert all(len(line) <= LONGEST_TITLE_LINE for line in lines), f"{title!r} drawn as {lines}"
    assert titles["DPO accuracy (chosen ranked above rejected)"] == ["DPO accuracy", "(chosen ranked above rejected)"]
