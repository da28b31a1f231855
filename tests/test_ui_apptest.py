"""The Streamlit pages under `streamlit.testing.v1.AppTest`: fast, no model is loaded, no trainer runs.

Each test points the app at temporary runs/data folders (VLM_RUNS_DIR, VLM_DATA_DIR) and writes run folders
by hand, the way the CLI would, so the pages are tested against the run-folder contract alone.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.config import read_yaml, to_yaml, validate_config
from core.runs import RunDir
from core.processes import process_owner
from image_vlm.config import ImageConfig
from video_vlm.config import VideoConfig

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "ui" / "app.py")
TIMEOUT = 60


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    runs, data = tmp_path / "runs", tmp_path / "data"
    runs.mkdir()
    data.mkdir()
    monkeypatch.setenv("VLM_RUNS_DIR", str(runs))
    monkeypatch.setenv("VLM_DATA_DIR", str(data))
    monkeypatch.setenv("VLM_PAGE", "all")
    return runs, data


def app(page: str = "image") -> AppTest:
    """The app on one page (VLM_PAGE picks it; the recipe pages are the default page of their container)."""
    os.environ["VLM_PAGE"] = page if page in ("image", "video") else "all"
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    if page == "runs":
        at.switch_page("pages/runs.py").run()
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return matches[0]


def make_run(runs: Path, run_id: str, state: str, recipe: str = "image", pid: int | None = None, adapter: bool = False,
             config_overrides: dict | None = None) -> Path:
    """A run folder as the training CLI leaves it: config.yaml, status.json, a few metrics."""
    cls, preset = (ImageConfig, "image_vlm") if recipe == "image" else (VideoConfig, "video_vlm")
    data = read_yaml(ROOT / preset / "configs" / "tiny.yaml")
    data.setdefault("data", {})["root"] = str(runs.parent / "data" / f"synthetic-{recipe}")
    for section, values in (config_overrides or {}).items():
        data.setdefault(section, {}).update(values)
    run = runs / run_id
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(validate_config(cls, data)))
    pid = pid or 999_999_999
    # Owned by this namespace, so a dead pid reads `crashed` at once (as from the trainer's own container).
    status = {"state": state, "pid": pid, "owner": {**process_owner(), "pid": pid}, "step": 3, "total": 6,
              "started": "2026-01-01T10:00:00+00:00"}
    if state in ("finished", "stopped", "failed"):
        status["ended"] = "2026-01-01T10:01:00+00:00"
    if state == "failed":
        status["error"] = "RuntimeError: out of GPU memory"
    (run / "status.json").write_text(json.dumps(status))
    with (run / "metrics.jsonl").open("w") as f:
        for step in (1, 2, 3):
            f.write(json.dumps({"step": step, "time": 100.0 + step, "loss": 1.0 / step, "learning_rate": 1e-4,
                                "grad_norm": 0.5, "reward": 0.1 * step, "rewards/format_reward/mean": 0.2}) + "\n")
    if adapter:
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_config.json").write_text("{}")
    return run


def png_bytes(size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


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


# ---------------------------------------------------------------------------------------------- pages render


@pytest.mark.parametrize("page", ["image", "video", "runs"])
def test_page_renders_without_exception(dirs, page):
    at = app(page)
    assert not at.exception, at.exception
    assert at.title, "every page has a title"
    assert not at.error, texts(at.error)


@pytest.mark.parametrize("page", ["image", "video"])
def test_vlm_page_selects_pages(dirs, page):
    """A container serving one recipe shows that recipe's page first, and never the other recipe's."""
    at = app(page)
    titles = texts(at.title)
    assert ("Image VLM" if page == "image" else "Video VLM") in titles


def test_form_fields_present_with_help_and_ranges(dirs):
    at = app("image")
    numbers = {n.label: n for n in at.number_input}
    for label in ("LoRA rank (r)", "LoRA alpha", "Max steps", "Epochs", "Batch size (per device)", "Learning rate",
                  "Generations per prompt", "Weight: format reward", "Weight: correctness reward"):
        assert label in numbers, f"missing {label}; have {sorted(numbers)}"
        assert numbers[label].help, f"{label} has no help"
    # Help is the config field's description plus its allowed range.
    assert "LoRA rank" in numbers["LoRA rank (r)"].help and "Allowed: >= 1 and <= 1024" in numbers["LoRA rank (r)"].help
    assert numbers["LoRA rank (r)"].min == 1 and numbers["LoRA rank (r)"].max == 1024
    assert numbers["Generations per prompt"].value == 4  # from the tiny preset
    checkboxes = {c.label: c for c in at.checkbox}
    for label in ("Vision attention", "Vision MLP", "Language attention", "Language MLP"):
        assert label in checkboxes and checkboxes[label].help
    selects = {s.label: s for s in at.selectbox}
    assert selects["Fine-tuning method"].options == ["LoRA", "QLoRA (4-bit)", "full fine-tuning"]
    assert "Optimizer" in selects and "adamw_torch" in selects["Optimizer"].options
    assert any(t.label == "Model" and t.value == "tiny:qwen2_5_vl" for t in at.text_input)


def test_video_form_has_frame_settings(dirs):
    at = app("video")
    numbers = {n.label: n for n in at.number_input}
    assert numbers["Frames per clip"].max == 64 and numbers["Frames per clip"].help
    assert "Frame size (longest side, px)" in numbers
    assert "Generations per prompt" not in numbers  # GRPO only


# ---------------------------------------------------------------------------------------------- start / stop


def hold_gpu_lock(runs: Path, run_id: str = "x"):
    """Hold `<runs>/.gpu.lock` the way a trainer does (flock, plus the record naming the run)."""
    handle = open(runs / ".gpu.lock", "a+")  # noqa: SIM115 - held open for the test's duration
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.truncate(0)
    handle.write(json.dumps({"run_id": run_id, "pid": os.getpid(), "since": "2026-01-01T00:00:00+00:00"}))
    handle.flush()
    return handle


class FakeProcess:
    pid = 12345

    def poll(self):
        return None


def fake_popen(calls: list):
    """Stands in for the trainer: the real launcher runs (GPU lock, folder, `starting`), nothing is started."""

    def popen(command, **kwargs):
        calls.append(command)
        return FakeProcess()

    return popen


def test_start_while_gpu_busy_shows_message_and_starts_nothing(dirs, monkeypatch):
    runs, _ = dirs
    started = []
    monkeypatch.setattr("core.gpu_lease.subprocess.Popen", fake_popen(started))
    lock = hold_gpu_lock(runs)
    try:
        at = app("image")
        assert "Start is refused until it ends or is stopped (there is no queue)" in texts(at.info)
        button(at, "Start training").click().run()
        assert not at.exception
        assert "GPU busy: run x is training" in texts(at.error)
    finally:
        lock.close()
    assert started == []
    assert [p.name for p in runs.iterdir()] == [".gpu.lock"], "no run folder was created"


def test_start_launches_the_cli_with_the_form_config(dirs, monkeypatch):
    runs, data = dirs
    calls = []
    monkeypatch.setattr("core.gpu_lease.subprocess.Popen", fake_popen(calls))
    at = app("image")
    [r for r in at.number_input if r.label == "LoRA rank (r)"][0].set_value(4)
    button(at, "Start training").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "Started run image-" in texts(at.success)
    (command,) = calls
    config_path = Path(command[command.index("--config") + 1])
    run_path = Path(command[command.index("--run-dir") + 1])
    assert command[1:3] == ["-m", "image_vlm.train"] and config_path == run_path / "launch.yaml"
    launched = yaml.safe_load(config_path.read_text())
    assert launched["finetune"]["r"] == 4
    assert launched["data"]["root"] == str(data / "synthetic-wildfire"), "preset data/ maps onto VLM_DATA_DIR"
    assert not (run_path / "config.yaml").exists(), "the CLI writes config.yaml itself"
    # The launcher wrote `starting` before it returned: no grey `missing` badge while torch loads.
    assert json.loads((run_path / "status.json").read_text())["state"] == "starting"
    assert "Launching the trainer" in texts(at.info)


def test_invalid_form_values_give_a_field_message(dirs, monkeypatch):
    monkeypatch.setattr("ui.recipes.launch_training", lambda *a, **k: pytest.fail("must not launch"))
    at = app("image")
    [n for n in at.number_input if n.label == "Generations per prompt"][0].set_value(3)
    button(at, "Start training").click().run()
    assert not at.exception
    assert "Not started" in texts(at.error) and "train.num_generations" in texts(at.error)


def test_dataset_failing_verification_refuses_to_start(dirs, monkeypatch):
    runs, data = dirs
    broken = data / "broken"
    (broken / "train" / "only_class").mkdir(parents=True)
    (broken / "train" / "only_class" / "a.png").write_bytes(png_bytes())
    monkeypatch.setattr("ui.recipes.launch_training", lambda *a, **k: pytest.fail("must not launch"))
    at = app("image")
    picker = [s for s in at.selectbox if s.label == "Dataset folder"][0]
    picker.set_value(broken).run()
    assert "a classifier needs at least two" in texts(at.error)  # shown by the dataset check
    button(at, "Start training").click().run()
    assert not at.exception
    assert "Not started: the dataset failed verification" in texts(at.error)
    assert not any(p.is_dir() for p in runs.iterdir())


def test_stop_with_nothing_running_shows_message(dirs):
    """The run ends between drawing the page and the click: Stop says so instead of failing."""
    runs, _ = dirs
    trainer = subprocess.Popen(["sleep", "60"])
    try:
        make_run(runs, "image-20260101-100000", "running", pid=trainer.pid)
        at = app("image")
    finally:
        trainer.kill()
        trainer.wait()
    button(at, "Stop training").click().run()
    assert not at.exception
    assert "Nothing to stop: run image-20260101-100000 crashed" in texts(at.info)


def test_stop_is_offered_only_for_active_runs(dirs):
    runs, _ = dirs
    make_run(runs, "image-20260101-100000", "finished", adapter=True)
    at = app("image")
    assert not [b for b in at.button if b.label == "Stop training"]
    assert not [b for b in at.button if b.label == "Resume training"], "a finished run is not resumed"


def test_stop_sends_sigterm_and_shows_saving(dirs):
    runs, _ = dirs
    # A stand-in trainer in its own process group: it records SIGTERM and keeps going (the real one finishes
    # its step and saves before it writes `stopped`).
    signal_file = runs / "signal.txt"
    trainer = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time\n"
         "signal.signal(signal.SIGTERM, lambda *a: open(sys.argv[1], 'w').write('TERM'))\n"
         "open(sys.argv[1], 'w').write('ready')\n"
         "while True: time.sleep(0.1)", str(signal_file)],
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not signal_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        run = make_run(runs, "image-20260101-100000", "running", pid=trainer.pid)
        status = json.loads((run / "status.json").read_text())
        (run / "status.json").write_text(json.dumps({**status, "pgid": trainer.pid}))
        at = app("image")
        button(at, "Stop training").click().run()
        assert not at.exception
        assert "Stopping: saving a checkpoint" in texts(at.info)
        deadline = time.monotonic() + 10
        while signal_file.read_text() != "TERM" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert signal_file.read_text() == "TERM"
        (run / "status.json").write_text(json.dumps({**status, "state": "stopped", "pgid": trainer.pid}))
        at.run()
        assert "checkpoint saved. Resume continues from it." in texts(at.success)
        assert [b for b in at.button if b.label == "Resume training"]
    finally:
        trainer.kill()
        trainer.wait()


def test_newest_active_run_is_shown_by_default(dirs):
    runs, _ = dirs
    make_run(runs, "image-20260101-100000", "finished")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        make_run(runs, "image-20250101-100000", "running", pid=sleeper.pid)
        # The active run is older by name; touching the finished one makes it the newest by time.
        os.utime(runs / "image-20260101-100000" / "status.json")
        at = app("image")
        run_picker = [s for s in at.selectbox if s.label == "Run"][0]
        assert run_picker.value == "image-20250101-100000"
        assert any("step 3 of 6" in bar.proto.text for bar in at.get("progress"))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_resume_is_offered_for_stopped_and_crashed_runs(dirs, monkeypatch):
    runs, _ = dirs
    calls = []
    monkeypatch.setattr("core.gpu_lease.subprocess.Popen", fake_popen(calls))
    make_run(runs, "image-20260101-100000", "running", pid=999_999_999)  # its process is gone: crashed
    at = app("image")
    assert "crashed" in texts(at.error) or "gone without finishing" in texts(at.error)
    button(at, "Resume training").click().run()
    assert not at.exception
    (command,) = calls
    assert command[1:3] == ["-m", "image_vlm.train"]
    assert command[command.index("--config") + 1] == str(runs / "image-20260101-100000" / "config.yaml")
    assert "Resuming run image-20260101-100000" in texts(at.success)


def test_resume_clicked_twice_starts_one_trainer(dirs, monkeypatch):
    """Two clicks (or two tabs) on Resume before the first redraw: the second sees the pending launch."""
    runs, _ = dirs
    calls = []
    monkeypatch.setattr("core.gpu_lease.subprocess.Popen", fake_popen(calls))
    make_run(runs, "image-20260101-100000", "stopped")
    first, second = app("image"), app("image")  # both drawn while the run is stopped
    button(first, "Resume training").click().run()
    assert not first.exception and len(calls) == 1
    assert "Resume training" not in [b.label for b in first.button], "the pending launch replaces the button"
    assert "Stop training" in [b.label for b in first.button]
    from core.runs import RunDir, RunError
    from ui.recipes import IMAGE, resume_training

    with pytest.raises(RunError, match="already starting"):
        resume_training(IMAGE, RunDir(runs / "image-20260101-100000"))
    button(second, "Resume training").click().run()
    assert not second.exception and len(calls) == 1, "the second click starts nothing"


def test_failed_run_shows_its_error(dirs):
    runs, _ = dirs
    make_run(runs, "image-20260101-100000", "failed")
    at = app("image")
    assert "Training failed: RuntimeError: out of GPU memory" in texts(at.error)
    assert not [b for b in at.button if b.label == "Resume training"], "failed runs are not resumed"


def test_skipped_training_clips_are_listed_with_file_and_line(dirs):
    runs, _ = dirs
    run = make_run(runs, "video-20260101-100000", "finished", recipe="video")
    records = [
        {"video": "videos/broken.mp4", "line_no": 7, "start_s": 0.0, "end_s": 4.0, "kind": "decode_failed",
         "message": "videos/broken.mp4: decoding failed near 1.5s", "stage": None},
    ] * 2
    (run / "skipped.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    at = app("video")
    assert not at.exception
    assert any("2 training sample(s) skipped (decode_failed 2)" in e.label for e in at.expander)
    assert "videos/broken.mp4" in at.dataframe[-1].value["clip"].tolist()


def test_run_folder_deleted_mid_session_shows_message(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "finished", adapter=True)
    at = app("image")
    assert not at.warning
    shutil.rmtree(run)
    at.run()
    assert not at.exception
    assert "image-20260101-100000 no longer exists" in texts(at.warning)


# ---------------------------------------------------------------------------------------------- runs page


def test_runs_page_lists_a_cli_made_run(dirs):
    runs, _ = dirs
    run = runs / "my-cli-experiment"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 6, "total": 6, "pid": 1,
                                                  "started": "2026-01-01T10:00:00+00:00", "ended": "2026-01-01T10:05:00+00:00"}))
    (run / "config.yaml").write_text(to_yaml(ImageConfig()))
    make_run(runs, "video-20260101-100000", "stopped", recipe="video")
    at = app("runs")
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    rows = {row["run"]: row for row in table.to_dict("records")}
    assert rows["my-cli-experiment"]["recipe"] == "image"  # from the shape of its config
    assert rows["my-cli-experiment"]["state"] == "finished" and rows["my-cli-experiment"]["step"] == "6/6"
    assert rows["video-20260101-100000"]["recipe"] == "video" and rows["video-20260101-100000"]["state"] == "stopped"
    # The detail view shows the config and offers Resume for the stopped run.
    opener = [s for s in at.selectbox if s.label == "Open run"][0]
    opener.set_value("video-20260101-100000").run()
    assert any("tiny:internvl" in str(c.value) for c in at.code)
    assert [b for b in at.button if b.label == "Resume training"]


def test_runs_page_survives_a_deleted_run(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "finished")
    at = app("runs")
    shutil.rmtree(run)
    at.run()
    assert not at.exception
    assert "No runs yet" in texts(at.info) or "no longer exists" in texts(at.warning)


# ---------------------------------------------------------------------------------------------- evaluation


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


# ---------------------------------------------------------------------------------------------- uploads


def compare_upload(at: AppTest, recipe: str, name: str, data: bytes, mime: str) -> AppTest:
    at.radio(key=f"{recipe}:source").set_value("Upload").run()
    uploader = at.file_uploader(key=f"{recipe}:upload")
    uploader.set_value((name, data, mime))
    return at.run()


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("notes.txt", b"hello", ".txt files are not accepted"),
        ("empty.png", b"", "the file is empty"),
        ("fake.png", b"this is not a png", "not an image"),
        ("truncated.png", png_bytes()[:60], "truncated or corrupt"),
    ],
)
def test_bad_image_uploads_show_a_message(dirs, name, data, message):
    runs, _ = dirs
    make_run(runs, "image-20260101-100000", "finished", adapter=True)
    at = compare_upload(app("image"), "image", name, data, "image/png")
    assert not at.exception
    assert "Upload refused" in texts(at.error) and message in texts(at.error), texts(at.error)


def test_hostile_upload_name_is_made_safe(dirs):
    runs, _ = dirs
    make_run(runs, "image-20260101-100000", "finished", adapter=True)
    at = compare_upload(app("image"), "image", "../../etc/passwd.png", png_bytes(), "image/png")
    assert not at.exception and not at.error, texts(at.error)
    assert "saved as `passwd.png`" in texts(at.caption)
    assert [b for b in at.button if b.label == "Generate"]


def test_bad_video_upload_shows_a_message(dirs):
    runs, _ = dirs
    make_run(runs, "video-20260101-100000", "finished", recipe="video", adapter=True)
    from ui.uploads import upload_root

    before = set(upload_root().iterdir())
    at = compare_upload(app("video"), "video", "bad.mp4", b"\x00\x00\x00\x18ftypmp42 not really", "video/mp4")
    assert not at.exception
    error = texts(at.error)
    assert "Upload refused: bad.mp4: cannot be read as a video: the file is damaged" in error, error
    assert str(upload_root()) not in error and "Errno" not in error, "no server path, no raw error number"
    assert set(upload_root().iterdir()) <= before, "the refused upload's folder is removed"


def test_compare_panel_without_trained_runs_says_so(dirs):
    at = app("image")
    assert "No adapter yet" in texts(at.info)


# ---------------------------------------------------------------------------------------------- upload checks


def test_save_upload_checks_size_name_and_content(tmp_path):
    from ui.uploads import UploadError, save_upload

    image = (".png", ".jpg")
    saved = save_upload("..\\..\\Windows\\fire photo (1).PNG", png_bytes(), image, 20, "image", folder=tmp_path)
    assert saved.path == tmp_path / "fire_photo_1.png" and saved.renamed and saved.path.read_bytes() == png_bytes()
    with pytest.raises(UploadError, match="over the 1 MB limit"):
        save_upload("big.png", b"\x89PNG" + b"\x00" * (1024 * 1024 + 1), image, 1, "image", folder=tmp_path)
    with pytest.raises(UploadError, match="not an image"):
        save_upload("x.jpg", b"GIF89a-not-really", image, 20, "image", folder=tmp_path)
    assert not (tmp_path / "x.jpg").exists(), "refused files are not left behind"
    with pytest.raises(UploadError, match="files without a suffix"):
        save_upload("..", b"data", image, 20, "image", folder=tmp_path)


def test_save_upload_accepts_a_real_video(tmp_path):
    from core.media.video import write_clip
    from ui.uploads import UploadError, save_upload

    clip = write_clip(tmp_path / "src.mp4", np.zeros((8, 32, 32, 3), np.uint8), fps=8)
    saved = save_upload("dash cam.mp4", clip.read_bytes(), (".mp4", ".webm"), 200, "video", folder=tmp_path / "up")
    assert saved.name == "dash_cam.mp4" and saved.path.exists()
    with pytest.raises(UploadError):
        save_upload("broken.mp4", clip.read_bytes()[:200], (".mp4",), 200, "video", folder=tmp_path / "up")


# ---------------------------------------------------------------------------------------------- more pages


def test_wandb_link_appears_when_the_run_has_one(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "finished", adapter=True)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "wandb_url": "https://wandb.ai/team/vlm/runs/abc"}))
    at = app("image")
    links = [e for e in at.get("link_button") if "wandb.ai" in e.proto.url]
    assert links, "a link to the W&B run"


def test_switching_preset_refills_the_form(dirs):
    at = app("video")
    preset = [s for s in at.selectbox if s.label == "Preset"][0]
    full = [o for o in preset.options if o.startswith("full-size")]
    assert full, preset.options
    preset.set_value(full[0]).run()
    assert not at.exception
    assert any(t.label == "Model" and "InternVL3" in t.value for t in at.text_input)


def test_video_dataset_without_clips_refuses_to_start(dirs, monkeypatch):
    _, data = dirs
    (data / "empty-clips" / "videos").mkdir(parents=True)
    monkeypatch.setattr("ui.recipes.launch_training", lambda *a, **k: pytest.fail("must not launch"))
    at = app("video")
    [s for s in at.selectbox if s.label == "Dataset folder"][0].set_value(data / "empty-clips").run()
    button(at, "Start training").click().run()
    assert not at.exception
    assert "Not started: the dataset has no usable clips" in texts(at.error)
    assert "metadata.jsonl" in texts(at.error)


# ---------------------------------------------------------------------------------------------- form logic


def test_build_config_reports_bad_values_by_field():
    from core.config import ConfigError
    from ui.form import YamlText, build_config
    from ui.recipes import IMAGE, preset_values, presets

    base = preset_values(IMAGE, next(iter(presets(IMAGE).values())))
    cfg = build_config(IMAGE, base, {"rewards.weights": {"format": 0.0, "correctness": 2.0}})
    assert cfg.rewards.weights == {"correctness": 2.0}, "a zero weight turns the reward off"
    with pytest.raises(ConfigError, match="every reward weight is 0"):
        build_config(IMAGE, base, {"rewards.weights": {"format": 0.0, "correctness": 0.0}})
    with pytest.raises(ConfigError, match="'train.trainer' is not valid YAML"):
        build_config(IMAGE, base, {"train.trainer": YamlText("train.trainer", "a: [1, 2")})
    with pytest.raises(ConfigError, match="finetune.method"):
        build_config(IMAGE, base, {"finetune.method": "adapters"})
    assert build_config(IMAGE, base, {"data.labels": YamlText("data.labels", "")}).data.labels == {"wildfire": "Yes", "nowildfire": "No"}


def test_ui_doctests():
    """The ui package's doctests (pyproject's testpaths do not collect ui/)."""
    import doctest

    import ui.charts
    import ui.estimate
    import ui.evaluation
    import ui.form
    import ui.compare_models
    import ui.recipes
    import ui.uploads
    import ui.widgets

    modules = (ui.charts, ui.estimate, ui.evaluation, ui.form, ui.compare_models, ui.recipes, ui.uploads, ui.widgets)
    assert sum(len(t.examples) for m in modules for t in doctest.DocTestFinder().find(m)) > 20
    for module in modules:
        result = doctest.testmod(module)
        assert result.failed == 0, f"{module.__name__}: {result.failed} doctest(s) failed"


@pytest.mark.parametrize("recipe", ["image", "video"])
def test_compare_gallery_offers_samples(dirs, recipe):
    """Without a prepared dataset the gallery falls back to generated samples; no model is loaded to show it."""
    runs, _ = dirs
    make_run(runs, f"{recipe}-20260101-100000", "finished", recipe=recipe, adapter=True)
    at = app(recipe)
    assert not at.exception and not at.error, texts(at.error)
    samples = at.selectbox(key=f"{recipe}:sample")
    assert samples.options and all(name.startswith("synthetic/") for name in samples.options)
    assert [b for b in at.button if b.label == "Generate"]


# ---------------------------------------------------------------------------------------------- memory estimate


def markdown_text(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


@pytest.mark.parametrize("page", ["image", "video"])
def test_estimate_beside_start_for_the_tiny_preset(dirs, page):
    at = app(page)
    assert not at.exception
    assert "Memory estimate" in markdown_text(at)
    assert ":green-background[Fits:" in markdown_text(at)
    assert button(at, "Update estimate")


def test_estimate_follows_the_form_and_start_asks_before_an_oversized_run(dirs, monkeypatch):
    """A cap too small for the 7B preset turns the estimate red; Start then refuses until it is confirmed."""
    monkeypatch.setattr("ui.recipes.launch_training", lambda *a, **k: pytest.fail("must not launch"))
    at = app("image")
    preset = [s for s in at.selectbox if s.label == "Preset"][0]
    preset.set_value([o for o in preset.options if o.startswith("full-size")][0]).run()
    assert ":green-background[Fits:" in markdown_text(at)
    [n for n in at.number_input if n.label == "Max GPU memory (GB)"][0].set_value(18.0)
    button(at, "Update estimate").click().run()
    assert not at.exception
    assert ":red-background[Will not fit:" in markdown_text(at)
    assert "To fit, set" in texts(at.caption)
    button(at, "Start training").click().run()
    assert "the memory estimate says this config will not fit" in texts(at.error)
    [c for c in at.checkbox if c.label.startswith("Start even though")][0].check()
    button(at, "Start training").click().run()
    assert "the memory estimate says" not in texts(at.error)
    assert "Not started" in texts(at.error), "past the estimate, the missing 7B dataset stops it"


# ---------------------------------------------------------------------------------------------- time figures


def test_took_shows_the_running_time_not_the_stopped_gap(dirs):
    """started 10:00, ended 10:01 after an hour-long stop in between would read "took 1 min"; the run ran 42 s."""
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "finished", adapter=True)
    status = json.loads((run / "status.json").read_text())
    status.update(started="2026-01-01T09:00:00+00:00", active_s=42.0)
    (run / "status.json").write_text(json.dumps(status))
    at = app("image")
    captions = texts(at.caption)
    assert "took 42 s" in captions, captions


def test_eta_is_smoothed_over_recent_steps():
    """Step times of 10 s with one 120 s step (an evaluation, a checkpoint save) between logs: the estimate
    stays near 10 s a step instead of jumping with the outlier."""
    from ui.charts import eta_seconds

    times, metrics = 0.0, []
    for step in range(1, 12):
        times += 120.0 if step == 6 else 10.0
        metrics.append({"step": step, "time": times, "loss": 1.0})
    status = {"step": 11, "total": 21}
    assert eta_seconds(status, metrics, now=times) == pytest.approx(100.0)
    # Between two logs the estimate counts down, but not below the steps still to train.
    assert eta_seconds(status, metrics, now=times + 5) == pytest.approx(95.0)
    assert eta_seconds(status, metrics, now=times + 60) == pytest.approx(90.0)


# ---------------------------------------------------------------------------------------------- compare during a run


def live_run(runs: Path, run_id: str) -> Path:
    """A run whose trainer is this test process: active and beating, so it reads `running`."""
    run = make_run(runs, run_id, "running", pid=os.getpid())
    (run / "heartbeat").touch()
    return run


def test_compare_during_a_run_offers_its_latest_checkpoint(dirs):
    from core.checkpoints import record_checksums

    runs, _ = dirs
    run = live_run(runs, "image-20260101-100000")
    at = app("image")
    assert "is training: its latest checkpoint appears here" in texts(at.info)
    assert "No adapter yet: finish or stop a training run first (a saved checkpoint" not in texts(at.info)

    checkpoint = run / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_config.json").write_text("{}")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    record_checksums(checkpoint)
    at.run()
    assert "latest checkpoint, step 2 (`checkpoints/checkpoint-2`)" in texts(at.caption)


def test_runs_page_on_a_single_recipe_server_opens_its_own_recipe(dirs):
    """The video container's Runs page opens the newest video run, though a newer image run exists."""
    runs, _ = dirs
    video = make_run(runs, "video-20260101-090000", "finished", recipe="video")
    image = make_run(runs, "image-20260101-100000", "finished")
    os.utime(video / "status.json", (1_000, 1_000))
    os.utime(image / "status.json", (2_000, 2_000))
    os.environ["VLM_PAGE"] = "video"
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/runs.py").run()
    opener = [s for s in at.selectbox if s.label == "Open run"][0]
    assert opener.value == "video-20260101-090000"
    assert [row["run"] for row in at.dataframe[0].value.to_dict("records")][0] == "image-20260101-100000"


# ---------------------------------------------------------------------------------------------- form values kept


def number(at: AppTest, label: str):
    return [r for r in at.number_input if r.label == label][0]


def test_form_values_survive_a_reload(dirs, monkeypatch):
    """The values of the last start come back in a new session (a page reload), from runs/.form-image.yaml."""
    runs, _ = dirs
    monkeypatch.setattr("core.gpu_lease.subprocess.Popen", fake_popen([]))
    at = app("image")
    number(at, "LoRA rank (r)").set_value(4)
    button(at, "Start training").click().run()
    assert "Started run image-" in texts(at.success)
    assert (runs / ".form-image.yaml").is_file()
    reloaded = app("image")
    assert number(reloaded, "LoRA rank (r)").value == 4


def test_load_a_runs_config_into_the_form(dirs):
    runs, _ = dirs
    make_run(runs, "image-20260101-100000", "finished", adapter=True, config_overrides={"finetune": {"r": 3}})
    at = app("image")
    assert number(at, "LoRA rank (r)").value != 3
    button(at, "Load config into the form").click().run()
    assert not at.exception, at.exception
    assert number(at, "LoRA rank (r)").value == 3
    assert "now holds the config of run image-20260101-100000" in texts(at.success)


@pytest.mark.parametrize("recipe, command", [("image", "python -m image_vlm.data download"), ("video", "python -m video_vlm.data import-nexar")])
def test_dataset_not_found_says_how_to_get_it(dirs, recipe, command):
    from ui.components import dataset_problem
    from ui.recipes import RECIPES

    cls = ImageConfig if recipe == "image" else VideoConfig
    cfg = cls.model_validate({"data": {"root": "/nowhere/set", "synthetic": False}})
    problem = dataset_problem(RECIPES[recipe], Path("/nowhere/set"), cfg)
    assert problem.startswith("dataset folder /nowhere/set not found")
    assert command in problem and "KAGGLE_API_TOKEN" in problem


def test_a_dataset_that_labels_one_field_says_so_where_it_is_chosen(dirs, tmp_path):
    """A Nexar import supervises event_type only: the video page says so next to the dataset picker."""
    from video_vlm.data import import_nexar
    from core.media.video import write_clip

    _, data = dirs
    src = tmp_path / "nexar"
    frames = np.zeros((30, 32, 32, 3), np.uint8)
    write_clip(src / "train" / "00001.mp4", frames, fps=10)
    write_clip(src / "train" / "00002.mp4", frames, fps=10)
    (src / "train.csv").write_text("id,time_of_event,time_of_alert,target\n00001,2.5,1.9,1\n00002,,,0\n")
    import_nexar(data / "nexar", src=src, clip_seconds=1.0, progress=False)
    at = app("video")
    picker = [s for s in at.selectbox if s.label == "Dataset folder"][0]
    picker.set_value(data / "nexar").run()
    assert not at.exception, at.exception
    warning = texts(at.warning)
    assert "This dataset labels only event_type (1 of 7 fields)" in warning, warning
    assert "caption" in warning and "left out of the loss" in warning
