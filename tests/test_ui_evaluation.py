"""The evaluation panel and curves (ui/evaluation.py, ui/charts.py)."""

from __future__ import annotations

import json

import pytest

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
    assert "GPU busy: run other-run is training" in texts(at.error)
