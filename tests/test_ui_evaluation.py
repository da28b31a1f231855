"""The evaluation panel and curves (ui/evaluation.py, ui/charts.py)."""

from __future__ import annotations

import json

import pytest
from streamlit.proto.Metric_pb2 import Metric as MetricProto

from conftest import app, button, hold_gpu_lock, make_run, texts
from core.runs import RunDir

IMAGE_REPORT = {
    "run": "image-eval",
    "split": "test",
    "artifact": "runs/image-eval/adapter",
    "created": 1_790_000_000.0,
    "models": {
        "base": {"n": 8, "accuracy": 0.5, "precision": 0.5, "recall": 0.25, "f1": 0.333, "format_rate": 0.75,
                 "unparseable": 2, "positive": "Yes",
                 "confusion": {"Yes": {"Yes": 1, "No": 2, "unparseable": 1}, "No": {"Yes": 1, "No": 2, "unparseable": 1}}},
        "tuned": {"n": 8, "accuracy": 0.875, "precision": 1.0, "recall": 0.75, "f1": 0.857, "format_rate": 1.0,
                  "unparseable": 0, "positive": "Yes",
                  "confusion": {"Yes": {"Yes": 3, "No": 1, "unparseable": 0}, "No": {"Yes": 0, "No": 4, "unparseable": 0}}},
    },
    "examples": [{"image_path": "/nowhere/a.png", "answer": "Yes", "base": "<SOLUTION>No</SOLUTION>", "tuned": "<SOLUTION>Yes</SOLUTION>"}],
}


def test_eval_panel_renders_a_report(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-eval", "finished", adapter=True)
    (run / "eval").mkdir()
    (run / "eval" / "test.json").write_text(json.dumps(IMAGE_REPORT))
    at = app("image")
    assert not at.exception
    tables = [d.value for d in at.dataframe]
    metrics = next(t for t in tables if "accuracy" in t.index)
    assert metrics.loc["accuracy", "base"] == "0.500" and metrics.loc["accuracy", "tuned"] == "0.875"
    assert metrics.loc["accuracy", "change"] == "+0.375" and metrics.loc["n", "base"] == "8"
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    confusion = [c for c in charts if "confusion" in json.dumps(c.get("title", ""))]
    assert len(confusion) == 2, "one confusion matrix per model"


def test_eval_panel_renders_video_field_accuracy(dirs):
    runs, _ = dirs
    run = make_run(runs, "video-eval", "finished", recipe="video", adapter=True)
    (run / "eval").mkdir()
    models = {
        name: {"n": 4, "json_rate": rate, "valid_rate": rate, "unparseable": 0, "caption_similarity": 0.4,
               "field_accuracy": {"event_type": rate, "scene": 0.5}, "macro_f1": {"event_type": rate},
               "errors": ["scene: \"Moon\" is not one of Urban, Sub-urban, Rural, Highway"]}
        for name, rate in (("base", 0.25), ("tuned", 0.75))
    }
    (run / "eval" / "val.json").write_text(json.dumps({"run": "video-eval", "split": "val", "models": models, "examples": []}))
    at = app("video")
    assert not at.exception
    metrics = next(d.value for d in at.dataframe if "valid_rate" in d.value.index)
    assert metrics.loc["valid_rate", "change"] == "+0.500"
    titles = [json.dumps(json.loads(c.proto.spec).get("title", "")) for c in at.get("vega_lite_chart")]
    assert any("per-field accuracy" in t for t in titles)


def test_eval_panel_headlines_tuned_against_base_with_the_gain(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-eval", "finished", adapter=True)
    (run / "eval").mkdir()
    (run / "eval" / "test.json").write_text(json.dumps(IMAGE_REPORT))
    at = app("image")
    assert not at.exception
    (metric,) = [m for m in at.metric if "tuned against base" in m.label]
    assert metric.label.startswith("accuracy") and metric.value == "0.875" and metric.delta == "+0.375"
    assert "base 0.500 → tuned 0.875: tuned is better than base (+0.375)" in texts(at.caption)


def test_per_field_bars_draw_zero_and_say_why(dirs):
    """A base model that wrote no JSON scores 0 on every field: its bars are drawn at 0, labelled, and a note says why."""
    runs, _ = dirs
    run = make_run(runs, "video-eval", "finished", recipe="video", adapter=True)
    (run / "eval").mkdir()
    models = {
        "base": {"n": 4, "json_rate": 0.0, "valid_rate": 0.0, "unparseable": 4, "field_accuracy": {}, "macro_f1": {}},
        "tuned": {"n": 4, "json_rate": 1.0, "valid_rate": 1.0, "unparseable": 0,
                  "field_accuracy": {"event_type": 1.0, "scene": 0.5}, "macro_f1": {"event_type": 1.0}},
    }
    (run / "eval" / "val.json").write_text(json.dumps({"run": "video-eval", "split": "val", "models": models, "examples": []}))
    at = app("video")
    assert not at.exception
    assert "base: no valid JSON from this model yet (4 of 4 answers unparseable), so every field scores 0" in texts(at.caption)
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    (chart,) = [c for c in specs if "per-field accuracy" in json.dumps(c.get("title", ""))]
    assert any(layer.get("mark", {}).get("type") == "text" for layer in chart["layer"]), "values are written on the bars"
    from ui.charts import per_field_frame

    rows = per_field_frame(models).values.tolist()
    assert rows == [["base", "event_type", 0.0], ["base", "scene", 0.0], ["tuned", "event_type", 1.0], ["tuned", "scene", 0.5]]


def test_curves_mark_where_each_stage_begins(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "finished", adapter=True)
    with (run / "metrics.jsonl").open("w") as f:
        for stage, steps in (("warm_start", 3), ("grpo", 2)):
            for step in range(1, steps + 1):
                f.write(json.dumps({"step": step, "stage": stage, "time": 100.0 + step, "loss": 1.0 / step}) + "\n")
    at = app("image")
    assert not at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    (loss,) = [c for c in specs if c.get("title") == "loss"]
    assert [layer["mark"]["type"] for layer in loss["layer"]] == ["line", "rule", "text"]
    assert loss["layer"][0]["encoding"]["x"]["field"] == "run_step"
    from ui.charts import metrics_frame, stage_boundaries

    frame = metrics_frame(RunDir(run).read_metrics())
    assert frame["run_step"].tolist() == [1, 2, 3, 4, 5] and stage_boundaries(frame) == [(3.5, "grpo")]


def test_evaluate_button_refused_while_gpu_busy(dirs, monkeypatch):
    runs, _ = dirs
    make_run(runs, "image-eval", "finished", adapter=True)
    monkeypatch.setattr("subprocess.Popen", lambda *a, **k: pytest.fail("must not start"))
    lock = hold_gpu_lock(runs, "other-run")
    try:
        at = app("image")
        button(at, "Evaluate").click().run()
    finally:
        lock.close()
    assert not at.exception
    assert "GPU busy: run other-run (Image VLM page) is training" in texts(at.error)


# ------------------------------------------------------------------------------------- the verdict on the page


def write_report(runs, recipe: str, comparison: dict) -> None:
    run = make_run(runs, f"{recipe}-eval", "finished", recipe=recipe, adapter=True)
    (run / "eval").mkdir()
    split = "test" if recipe == "image" else "val"
    report = {"run": f"{recipe}-eval", "split": split, "baseline": "base", "created": 1_790_000_000.0, **comparison,
              "examples": []}
    (run / "eval" / f"{split}.json").write_text(json.dumps(report))


def all_words(at) -> str:
    metrics = "\n".join(f"{m.label} {m.value} {m.delta}" for m in at.metric)
    return "\n".join([texts(at.markdown), texts(at.caption), texts(at.warning), texts(at.info), metrics])


def headline_metric(at):
    (metric,) = [m for m in at.metric if "tuned against base" in m.label]
    return metric


def test_a_constant_answer_model_reads_no_better_than_a_constant_answer(dirs):
    """Tuned says "No" to all 48 balanced images: 0.208 → 0.500 over a base that mostly writes nothing, but a
    constant answer scores the same: the headline says so, in grey, and warns which answer it gives."""
    from image_vlm.evaluate import compare_answers

    runs, _ = dirs
    expected = ["Yes"] * 24 + ["No"] * 24
    base = ["<SOLUTION>Yes</SOLUTION>"] * 10 + ["I cannot tell."] * 38
    write_report(runs, "image", compare_answers(expected, {"base": base, "tuned": ["<SOLUTION>No</SOLUTION>"] * 48},
                                                ["Yes", "No"], "Yes", reasoning=False))
    at = app("image")
    assert not at.exception
    words = all_words(at)
    assert "Verdict: **no better than a constant answer**" in texts(at.markdown)
    assert "base 0.208 → tuned 0.500: no better than a constant answer (always \"Yes\" scores 0.500)" in texts(at.caption)
    assert 'tuned answers "No" to all 48 images' in texts(at.warning)
    assert "better than base" not in words and "is better" not in words
    metric = headline_metric(at)
    assert metric.value == "0.500" and metric.proto.color == MetricProto.MetricColor.GRAY
    assert metric.proto.direction == MetricProto.MetricDirection.NONE, "no arrow for a constant answer"
    table = next(d.value for d in at.dataframe if "accuracy" in d.value.index)
    assert table.loc["accuracy", "tuned 95% CI"] == "[0.364, 0.636]"
    assert 'always "Yes" 0.500 [0.364, 0.636] · chance 0.500' in texts(at.caption)


def test_a_zero_change_on_video_reads_indistinguishable_without_a_green_arrow(dirs):
    from video_vlm.evaluate import compare_outputs
    from video_vlm.schema import load_schema

    runs, _ = dirs
    schema = load_schema(None)
    label = {"caption": "A white square moves left.", "event_type": "collision", "rule_violations": [],
             "intended_action": "turn_left", "traffic_density": "low", "visibility": "good", "scene": "Urban"}
    labels = [{**label, "event_type": ("collision", "no_incident")[i % 2], "visibility": ("good", "bad")[i // 2 % 2],
               "intended_action": ("turn_left", "turn_right", "change_lanes")[i % 3]} for i in range(24)]
    answers = [schema.render_label(item) for item in labels]
    write_report(runs, "video", compare_outputs(schema, {"base": answers, "tuned": answers}, labels))
    at = app("video")
    assert not at.exception
    metric = headline_metric(at)
    assert metric.delta == "+0.000" and metric.proto.color == MetricProto.MetricColor.GRAY
    assert metric.proto.direction == MetricProto.MetricDirection.NONE
    assert "Verdict: **indistinguishable**" in texts(at.markdown)
    assert "base 1.000 → tuned 1.000: indistinguishable from base (+0.000, 95 % interval" in texts(at.caption)
    assert "better than base" not in all_words(at)


def test_only_a_better_verdict_is_green(dirs):
    from image_vlm.evaluate import compare_answers

    runs, _ = dirs
    expected = ["Yes", "No"] * 24
    coin = [f"<SOLUTION>{'Yes' if i % 4 < 2 else 'No'}</SOLUTION>" for i in range(48)]
    right = [f"<SOLUTION>{e}</SOLUTION>" for e in expected]
    write_report(runs, "image", compare_answers(expected, {"base": coin, "tuned": right}, ["Yes", "No"], "Yes", reasoning=False))
    at = app("image")
    assert not at.exception
    metric = headline_metric(at)
    assert metric.delta == "+0.500" and metric.proto.color == MetricProto.MetricColor.GREEN
    assert "Verdict: **better**" in texts(at.markdown)
    assert "base 0.500 → tuned 1.000: tuned is better than base (+0.500), 95 % interval of the difference" in texts(at.caption)


def test_a_report_without_intervals_claims_no_verdict_in_colour(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-eval", "finished", adapter=True)
    (run / "eval").mkdir()
    (run / "eval" / "test.json").write_text(json.dumps(IMAGE_REPORT))
    at = app("image")
    metric = headline_metric(at)
    assert metric.proto.color == MetricProto.MetricColor.GRAY and metric.proto.direction == MetricProto.MetricDirection.NONE
    assert "no confidence intervals, so no verdict" in texts(at.caption)


def test_per_field_axis_ticks_read_with_two_decimals(dirs):
    """Ticks at 0.25 and 0.75 read 0.25 and 0.75, not Vega's one-decimal 0.3 and 0.8."""
    runs, _ = dirs
    run = make_run(runs, "video-eval", "finished", recipe="video", adapter=True)
    (run / "eval").mkdir()
    models = {name: {"n": 4, "json_rate": 1.0, "valid_rate": 1.0, "unparseable": 0,
                     "field_accuracy": {"event_type": rate, "scene": 0.5}, "macro_f1": {"event_type": rate}}
              for name, rate in (("base", 0.25), ("tuned", 0.75))}
    (run / "eval" / "val.json").write_text(json.dumps({"run": "video-eval", "split": "val", "models": models, "examples": []}))
    at = app("video")
    assert not at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    per_field = [c for c in specs if "per-field" in json.dumps(c.get("title", ""))]
    assert len(per_field) == 2
    for spec in per_field:
        for layer in spec["layer"]:
            x = layer["encoding"]["x"]
            assert x["type"] == "quantitative" and x["axis"]["format"] == ".2f", x
            assert x["axis"]["values"] == [0, 0.25, 0.5, 0.75, 1]
