"""DPO in the UI (issue #26): the method on the form, the pairs table and summary, DPO's curves, and an evaluation
against a stage's weights."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from conftest import app, button, fake_popen, make_run, number, png_bytes, texts

SUMMARY = {"prompts": 10, "pairs": 2, "no_contrast": 8, "mean_margin": 0.75, "samples_per_prompt": 4,
           "temperature": 1.0, "model": "tiny:qwen2_5_vl"}


def pair(index: int, **reference) -> dict:
    return {"prompt_id": f"p{index}", **reference, "chosen": f"<SOLUTION>Yes</SOLUTION> {index}",
            "rejected": f"no tags {index}", "chosen_score": 1.0, "rejected_score": 0.25 * index, "margin": 1.0 - 0.25 * index,
            "model": "tiny:qwen2_5_vl", "schema": None}


def test_image_run_shows_its_pairs_with_thumbnails_and_the_summary(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "finished", adapter=True)
    tile = run / "tile.png"
    tile.write_bytes(png_bytes())
    lines = [pair(1, image_path=str(tile), answer="Yes"), pair(2, image_path=str(tile), answer="No")]
    (run / "pairs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run / "pairs_summary.json").write_text(json.dumps(SUMMARY))
    at = app("image")
    assert not at.exception, at.exception
    assert "Preference pairs" in texts(at.markdown)
    assert "pairs: 2 kept of 10 prompts; 8 with no contrast (all 4 answers scored the same); mean margin 0.750" in texts(at.caption)
    (table,) = [d.value for d in at.dataframe if "chosen" in d.value.columns]
    assert table["chosen"].tolist() == ["<SOLUTION>Yes</SOLUTION> 1", "<SOLUTION>Yes</SOLUTION> 2"]
    assert table["rejected"].tolist() == ["no tags 1", "no tags 2"]
    assert table["chosen score"].tolist() == [1.0, 1.0] and table["rejected score"].tolist() == [0.25, 0.5]
    assert table["margin"].tolist() == [0.75, 0.5] and table["expected"].tolist() == ["Yes", "No"]
    assert all(str(uri).startswith("data:image/png;base64,") for uri in table["image"]), "a thumbnail per pair"


def test_a_long_rejected_answer_shows_whole_in_the_pairs_table(dirs):
    """A rejected answer longer than its column wraps onto more lines instead of being cut at the column's edge: the
    grid wraps text only in rows taller than 4rem (64 px), and the answers get wide columns."""
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "finished", adapter=True)
    rambling = "no tags " + " ".join(f"word{index}" for index in range(60))
    (run / "pairs.jsonl").write_text(json.dumps({**pair(1, answer="Yes"), "rejected": rambling}) + "\n")
    at = app("image")
    (grid,) = [d for d in at.dataframe if "rejected" in d.value.columns]
    assert grid.value["rejected"].tolist() == [rambling], "the whole answer, not a cut copy"
    assert grid.proto.row_height > 64, "rows tall enough for the grid to wrap text"
    columns = json.loads(grid.proto.columns)
    assert columns["rejected"]["width"] == "large" and columns["chosen"]["width"] == "large", columns


def test_video_run_shows_its_pairs_by_clip_reference(dirs):
    runs, _ = dirs
    run = make_run(runs, "video-20260101-100000", "finished", recipe="video", adapter=True)
    line = pair(1, video="videos/a.mp4", start_s=2.0, end_s=6.5, line_no=7, label={"scene": "Urban"})
    (run / "pairs.jsonl").write_text(json.dumps(line) + "\n")
    at = app("video")
    assert not at.exception, at.exception
    (table,) = [d.value for d in at.dataframe if "chosen" in d.value.columns]
    assert table["clip"].tolist() == ["videos/a.mp4 2.0–6.5 s (line 7)"]
    assert table["margin"].tolist() == [0.75] and "image" not in table.columns


def test_pairs_stage_progress_counts_prompts_before_any_metric_line(dirs):
    runs, _ = dirs
    trainer = subprocess.Popen(["sleep", "60"])  # a live pid: the run reads `running`, not `crashed`
    try:
        run = make_run(runs, "image-20260101-100000", "running", pid=trainer.pid)
        status = json.loads((run / "status.json").read_text())
        status.update(stage="pairs", stages=["warm_start", "pairs", "dpo"], step=40, total=96)
        (run / "status.json").write_text(json.dumps(status))
        (run / "heartbeat").touch()
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"step": step, "stage": "warm_start", "time": 100.0 + step, "loss": 1.0 / step}) + "\n"
            for step in (1, 2, 3)
        ))
        at = app("image")
    finally:
        trainer.kill()
        trainer.wait()
    assert not at.exception, at.exception
    (bar,) = [bar for bar in at.get("progress") if "stage" in bar.proto.text]
    assert "stage 2 of 3 (pairs) · 40 of 96 prompts sampled" in bar.proto.text, bar.proto.text
    # The run's start is not the pairs stage's: no pace from the warm start's time.
    assert "estimating time left" in bar.proto.text, bar.proto.text


def chart_title(title) -> str | None:
    """A chart's title as read on the page: a plain title, or a title with its subtitle underneath."""
    if isinstance(title, dict):
        return " ".join(" ".join(part) if isinstance(part, list) else str(part)
                        for part in (title.get("text"), title.get("subtitle")) if part)
    return title


def test_dpo_metrics_draw_their_curves_beside_grpo_rewards(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "finished", adapter=True)
    with (run / "metrics.jsonl").open("a") as f:
        for step in (1, 2):
            f.write(json.dumps({"step": step, "stage": "dpo", "time": 200.0 + step, "loss": 0.6, "rewards/chosen": 0.1 * step,
                                "rewards/rejected": -0.1 * step, "rewards/margins": 0.2 * step,
                                "rewards/accuracies": 0.5 * step}) + "\n")
    at = app("image")
    assert not at.exception, at.exception
    titles = [chart_title(json.loads(c.proto.spec).get("title")) for c in at.get("vega_lite_chart")]
    for title in ("DPO reward: chosen", "DPO reward: rejected", "DPO margin (chosen − rejected)",
                  "DPO accuracy (chosen ranked above rejected)", "reward: format", "total reward", "loss"):
        assert title in titles, f"no chart {title!r}; charts: {titles}"


def test_picking_dpo_shows_its_fields_and_starts_a_dpo_run(dirs, monkeypatch):
    calls = []
    monkeypatch.setattr("core.launch.subprocess.Popen", fake_popen(calls))
    at = app("image")
    method = [s for s in at.selectbox if s.label == "Training method"]
    assert method, f"no method field; selects: {[s.label for s in at.selectbox]}"
    assert method[0].value == "grpo" and "dpo" in method[0].options[1].lower()
    assert "Preference pairs and DPO" not in texts(at.markdown), "DPO's fields are shown only when it is picked"
    method[0].set_value("dpo").run()
    assert not at.exception, at.exception
    assert "Preference pairs and DPO" in texts(at.markdown)
    for label in ("Answers sampled per prompt", "Sampling temperature (pairs)", "DPO max steps", "DPO learning rate", "DPO beta"):
        assert number(at, label).help, label
    # GRPO's own fields do not apply to DPO: they are not on the form at all (nor under "All other settings").
    numbers = {n.label for n in at.number_input}
    for label in ("Max steps", "Generations per prompt", "Longest completion (tokens)", "KL penalty (GRPO beta)"):
        assert label not in numbers, f"{label} shown under DPO"
    assert "Rollouts with vLLM" not in {c.label for c in at.checkbox}
    assert "Trains 250 optimizer steps in all" in texts(at.markdown), "warm start 150 + DPO 100, beside Start"
    texts_in = {t.label for t in at.text_input}
    assert {"Your pairs file (JSONL)", "Sample from run (weights)"} <= texts_in, texts_in
    number(at, "DPO beta").set_value(0.3)
    number(at, "Answers sampled per prompt").set_value(6)
    button(at, "Start training").click().run()
    assert not at.exception and not at.error, texts(at.error)
    (command,) = calls
    launched = yaml.safe_load(open(command[command.index("--config") + 1]))
    assert launched["method"] == "dpo" and launched["dpo"]["beta"] == 0.3 and launched["pairs"]["samples_per_prompt"] == 6


def test_tiny_dpo_preset_is_labelled_as_a_tiny_one():
    from ui.recipes import IMAGE, presets

    labels = list(presets(IMAGE))
    assert labels[0].startswith("tiny (") and labels[1].startswith("tiny_dpo (local test model, CPU")
    assert not any(label.startswith("full-size: tiny") for label in labels), labels


@pytest.mark.parametrize("page", ["image", "runs"])
def test_a_report_against_a_stage_is_labelled_by_the_stage(dirs, page):
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "finished", adapter=True)
    (run / "eval").mkdir()
    models = {name: {"n": 8, "accuracy": accuracy, "unparseable": 0} for name, accuracy in (("base", 0.5), ("tuned", 0.875))}
    report = {"run": run.name, "split": "test", "baseline": "warm_start", "models": models,
              "examples": [{"answer": "Yes", "base": "<SOLUTION>No</SOLUTION>", "tuned": "<SOLUTION>Yes</SOLUTION>"}]}
    (run / "eval" / "test-vs-warm_start.json").write_text(json.dumps(report))
    at = app(page)
    assert not at.exception, at.exception
    metrics = next(d.value for d in at.dataframe if "accuracy" in d.value.index)
    assert list(metrics.columns) == ["warm_start", "tuned", "change"]
    assert metrics.loc["accuracy", "change"] == "+0.375"
    assert "warm_start 0.500 → tuned 0.875: tuned is better than warm_start (+0.375)" in texts(at.caption)
    examples = next(d.value for d in at.dataframe if "answer" in d.value.columns)
    assert "warm_start" in examples.columns and "base" not in examples.columns


def test_video_form_offers_dpo_once_its_config_has_the_method(dirs, monkeypatch):
    from ui import training
    from video_vlm.config import VideoConfig

    if "method" not in VideoConfig.model_fields:
        pytest.skip("the video config has no `method` field yet")
    built = []
    real_build = training.build_config
    monkeypatch.setattr(training, "build_config", lambda *args: built.append(real_build(*args)) or built[-1])
    at = app("video")
    (method,) = [s for s in at.selectbox if s.label == "Training method"]
    assert method.value == "sft"
    method.set_value("dpo").run()
    assert not at.exception, at.exception
    assert "Preference pairs and DPO" in texts(at.markdown)
    assert "Frames per clip" in {n.label for n in at.number_input}, "the video fields stay"
    assert "Max steps" not in {n.label for n in at.number_input}, "no SFT stage before DPO: SFT's steps do not apply"
    number(at, "DPO max steps").set_value(7).run()
    assert not at.exception, at.exception
    assert built[-1].method == "dpo" and built[-1].dpo.max_steps == 7
