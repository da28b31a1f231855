"""Runs side by side (core/run_comparison.py, ui/run_comparison.py): only the config and provenance keys that
differ, curves of every picked run on one step axis with the stage boundaries, and the evaluations' figures,
intervals and verdicts in one table, on the Runs page's "Compare runs" tab."""

from __future__ import annotations

import json

import pandas as pd

from conftest import app, make_run, texts
from core.files import write_json_atomic
from core.provenance import write_provenance
from core.runs import RunDir
from ui import charts

# ---------------------------------------------------------------------------------------------- the logic
# (core.run_comparison is imported in each test, so that the page's tests below run, and fail on what the page
# shows, on a checkout that has no such module.)


def test_the_diff_keeps_only_the_keys_that_differ_as_dotted_keys():
    from core.run_comparison import diff_table

    a = {"train": {"learning_rate": 1e-4, "seed": 42, "lr_scheduler_type": "cosine"}, "model": {"name": "tiny"}}
    b = {"train": {"learning_rate": 5e-4, "seed": 42, "lr_scheduler_type": "cosine", "warmup_steps": 2},
         "model": {"name": "tiny"}}
    table = diff_table({"run-a": a, "run-b": b})
    assert list(table.columns) == ["run-a", "run-b"]
    assert table.to_dict("index") == {"train.learning_rate": {"run-a": "0.0001", "run-b": "0.0005"},
                                      "train.warmup_steps": {"run-a": "(not set)", "run-b": "2"}}
    assert diff_table({"run-a": a, "run-b": a}).empty, "identical configs: no row"


def test_curves_of_runs_with_different_step_counts_align_by_step():
    from core.run_comparison import align_curves

    short = charts.metrics_frame([{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)])
    long = charts.metrics_frame([{"step": s, "loss": 2.0 / s} for s in (1, 2, 3, 4, 5, 6)])
    aligned = align_curves({"short": short, "long": long}, "loss")
    wide = aligned.pivot(index="x", columns="run", values="value")
    assert wide.index.tolist() == [1, 2, 3, 4, 5, 6]
    assert wide["long"].tolist() == [2.0, 1.0, 2 / 3, 0.5, 0.4, 2 / 6]
    assert wide["short"].tolist()[:3] == [1.0, 0.5, 1 / 3] and wide["short"].iloc[3:].isna().all()


def test_stage_boundaries_of_each_run_are_ruled_on_the_shared_chart():
    from core.run_comparison import align_curves, shared_boundaries

    def staged(warm: int, grpo: int) -> pd.DataFrame:
        return charts.metrics_frame([{"step": s, "stage": stage, "loss": 1.0 / s}
                                     for stage, steps in (("warm_start", warm), ("grpo", grpo))
                                     for s in range(1, steps + 1)])

    frames = {"a": staged(3, 4), "b": staged(5, 2)}
    boundaries = shared_boundaries({name: charts.stage_boundaries(frame) for name, frame in frames.items()})
    assert boundaries.values.tolist() == [[3.5, "grpo", "a"], [5.5, "grpo", "b"]]
    aligned = align_curves(frames, "loss")
    assert aligned.loc[aligned["run"] == "a", "x"].tolist() == [1, 2, 3, 4, 5, 6, 7], "stages laid end to end"
    spec = charts.comparison_chart(aligned, boundaries, "loss", ["a", "b"]).to_dict()
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["line", "rule", "text", "text"], marks
    rule = spec["layer"][1]
    assert [row["x"] for row in spec["datasets"][rule["data"]["name"]]] == [3.5, 5.5]
    labels = [row["label"] for layer in spec["layer"][2:] for row in spec["datasets"][layer["data"]["name"]]]
    assert labels == ["grpo (a)", "grpo (b)"], "a boundary only one run has names that run"
    assert spec["height"] > 0 and spec["layer"][0]["encoding"]["color"]["scale"]["domain"] == ["a", "b"]


def test_evaluation_rows_carry_the_intervals_and_the_verdict_words():
    from core.run_comparison import evaluation_rows

    report = image_report(0.5, 0.875, [0.2, 0.52], "better")
    (row,) = evaluation_rows("run-a", {"test": report})
    assert row["split"] == "test" and row["metric"] == "accuracy"
    assert (row["base"], row["base 95% CI"]) == ("0.500", "[0.364, 0.636]")
    assert (row["tuned"], row["tuned 95% CI"]) == ("0.875", "[0.753, 0.941]")
    assert row["difference (95% CI)"] == "+0.375 [+0.200, +0.520]" and row["verdict"] == "better"
    (old,) = evaluation_rows("run-b", {"test": {"split": "test", "models": {"base": {"accuracy": 0.5},
                                                                           "tuned": {"accuracy": 0.75}}}})
    assert old["difference (95% CI)"] == "+0.250" and old["verdict"] == "no verdict (report without intervals)"
    assert evaluation_rows("run-c", {})[0]["verdict"] == "not evaluated"


# ---------------------------------------------------------------------------------------------- the page


def image_report(base: float, tuned: float, difference_ci: list[float], verdict: str) -> dict:
    """An evaluation report shaped as image_vlm.evaluate writes it."""
    return {
        "split": "test", "baseline": "base",
        "models": {"base": {"n": 48, "accuracy": base, "ci95": {"accuracy": [0.364, 0.636]}},
                   "tuned": {"n": 48, "accuracy": tuned, "ci95": {"accuracy": [0.753, 0.941]}}},
        "headline": {"metric": "accuracy", "label": "accuracy", "base": base, "tuned": tuned,
                     "difference": round(tuned - base, 3), "ci95": difference_ci, "verdict": verdict},
        "verdict": verdict,
    }


def provenance(torch: str, commit: str) -> dict:
    return {"schema": 1, "code": {"git_commit": commit, "dirty": False, "package_version": "0.1.0"},
            "libraries": {"torch": torch, "transformers": "4.57.0"}, "python": "3.11.9", "platform": "Linux",
            "cpu": "x86_64 (2 cores)", "gpu": None, "data": {"root": "/data/w", "fingerprint": "sha256:ab"},
            "model": {"id": "tiny:qwen2_5_vl", "revision": "tiny"}, "seed": 42, "command": ["python", "-m", commit],
            "started": f"2026-01-01T10:00:0{len(commit) % 10}+00:00", "ended": None, "state": None}


def two_runs(runs) -> tuple[RunDir, RunDir]:
    """Two finished image runs that differ in their learning rate: the second trained 6 steps (the first 3) and
    logs token accuracy, which the first does not; both evaluated, both with provenance."""
    fast = RunDir(make_run(runs, "image-lr-5e-4", "finished", adapter=True,
                           config_overrides={"train": {"learning_rate": 5e-4}}))
    slow = RunDir(make_run(runs, "image-lr-1e-4", "finished", adapter=True,
                           config_overrides={"train": {"learning_rate": 1e-4}}))
    for step in (4, 5, 6):
        fast.append_metric({"step": step, "time": 100.0 + step, "loss": 1.0 / step, "learning_rate": 5e-4,
                            "grad_norm": 0.4, "reward": 0.1 * step, "rewards/format_reward/mean": 0.2,
                            "mean_token_accuracy": 0.1 * step})
    write_json_atomic(fast.eval_report_path("test"), image_report(0.5, 0.875, [0.2, 0.52], "better"))
    write_json_atomic(slow.eval_report_path("test"), image_report(0.5, 0.52, [-0.1, 0.14], "indistinguishable"))
    assert write_provenance(fast, provenance("2.9.0", "a" * 40)) and write_provenance(slow, provenance("2.8.0", "b" * 40))
    return fast, slow


def pick(at, *run_ids: str):
    (picker,) = [m for m in at.multiselect if m.label == "Runs to compare"]
    return picker.set_value(list(run_ids)).run()


def evaluation_table(at) -> pd.DataFrame:
    """The comparison's evaluation table (the runs table has a verdict column too, but no split)."""
    (table,) = [d.value for d in at.dataframe if {"split", "verdict"} <= set(d.value.columns)]
    return table.set_index("run")


def comparison_charts(at) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Each comparison chart on the page by title: its spec, and the data its curve (the line layer) draws."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    found = {}
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        (line,) = [u for u in spec.get("layer", [spec]) if (u.get("mark") or {}).get("type") == "line"]
        if line["encoding"].get("color", {}).get("field") != "run":
            continue  # the opened run's own curves (the All runs tab)
        datasets = {d.name: convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.proto.datasets}
        found[" ".join(spec["title"]) if isinstance(spec["title"], list) else spec["title"]] = (
            spec, datasets[(line.get("data") or spec["data"])["name"]])
    return found


def test_two_runs_side_by_side_show_what_differs_their_curves_and_their_verdicts(dirs):
    runs, _ = dirs
    fast, slow = two_runs(runs)
    at = pick(app("runs"), fast.id, slow.id)
    assert not at.exception, at.exception

    configs = [d.value for d in at.dataframe if d.value.index.name == "key" and "train.learning_rate" in d.value.index]
    assert len(configs) == 1, [d.value.index.tolist() for d in at.dataframe]
    config = configs[0]
    assert config.loc["train.learning_rate"].tolist() == ["0.0005", "0.0001"], config
    assert "train.seed" not in config.index and "model.name" not in config.index, "only the keys that differ"

    evaluation = evaluation_table(at)
    assert evaluation.loc[fast.id, "verdict"] == "better" and evaluation.loc[slow.id, "verdict"] == "indistinguishable"
    assert evaluation.loc[fast.id, "difference (95% CI)"] == "+0.375 [+0.200, +0.520]"
    assert evaluation.loc[slow.id, "tuned 95% CI"] == "[0.753, 0.941]"

    provenance_table = [d.value for d in at.dataframe if "libraries.torch" in d.value.index]
    assert len(provenance_table) == 1
    assert provenance_table[0].loc["libraries.torch"].tolist() == ["2.9.0", "2.8.0"]
    assert "code.git_commit" in provenance_table[0].index and "python" not in provenance_table[0].index
    assert "started" not in provenance_table[0].index, "launch times always differ: not a difference that matters"

    charts_shown = comparison_charts(at)
    assert sorted(charts_shown) == sorted(["loss", "reward: format", "total reward", "token accuracy", "learning rate",
                                           "grad norm"]), sorted(charts_shown)
    for title in ("loss", "total reward", "learning rate", "grad norm", "reward: format"):
        spec, rows = charts_shown[title]
        assert set(rows["run"]) == {fast.id, slow.id}, f"{title}: both runs' data on one chart"
        assert rows.groupby("run")["x"].max().to_dict() == {fast.id: 6, slow.id: 3}, f"{title}: aligned by step"
        assert spec["height"] > 0
    spec, rows = charts_shown["token accuracy"]
    assert set(rows["run"]) == {fast.id} and spec["height"] > 0
    assert f"No token accuracy in {slow.id}." in texts(at.caption), "a metric a run lacks is named, not dropped"


def test_one_run_picked_says_to_pick_another(dirs):
    runs, _ = dirs
    fast, _ = two_runs(runs)
    at = pick(app("runs"), fast.id)
    assert not at.exception, at.exception
    assert "Pick two or more runs to compare them (1 picked)." in texts(at.info)
    assert not [d for d in at.dataframe if "verdict" in d.value.columns and "split" in d.value.columns]


def test_a_run_without_evaluation_or_provenance_says_so(dirs):
    runs, _ = dirs
    fast, slow = two_runs(runs)
    bare = RunDir(make_run(runs, "image-lr-1e-4-again", "finished", config_overrides={"train": {"learning_rate": 1e-4}}))
    at = pick(app("runs"), slow.id, bare.id)
    assert not at.exception, at.exception
    evaluation = evaluation_table(at)
    assert evaluation.loc[bare.id, "verdict"] == "not evaluated"
    assert f"{bare.id}: no provenance recorded" in texts(at.warning)
    assert "The configs are identical." in texts(at.caption)
