"""The training panel (ui/training.py, ui/run_view.py): start, stop, resume, run states, dataset checks and times."""

from __future__ import annotations

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

from conftest import app, button, fake_popen, hold_gpu_lock, make_run, png_bytes, texts
from core.runs import RunDir
from image_vlm.config import ImageConfig
from video_vlm.config import VideoConfig


def test_start_while_gpu_busy_shows_message_and_starts_nothing(dirs, monkeypatch):
    runs, _ = dirs
    started = []
    monkeypatch.setattr("core.launch.subprocess.Popen", fake_popen(started))
    lock = hold_gpu_lock(runs)
    try:
        at = app("image")
        assert "Start is refused until it ends or is stopped (there is no queue)" in texts(at.info)
        button(at, "Start training").click().run()
        assert not at.exception
        assert "GPU busy: run x (Image VLM page) is training" in texts(at.error)
    finally:
        lock.close()
    assert started == []
    assert [p.name for p in runs.iterdir()] == [".gpu.lock"], "no run folder was created"


def test_start_launches_the_cli_with_the_form_config(dirs, monkeypatch):
    runs, data = dirs
    calls = []
    monkeypatch.setattr("core.launch.subprocess.Popen", fake_popen(calls))
    at = app("image")
    [s for s in at.selectbox if s.label == "Fine-tuning method"][0].set_value("lora").run()
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


def test_dataset_failing_verification_refuses_to_start(dirs, monkeypatch):
    runs, data = dirs
    broken = data / "broken"
    (broken / "train" / "only_class").mkdir(parents=True)
    (broken / "train" / "only_class" / "a.png").write_bytes(png_bytes())
    monkeypatch.setattr("ui.recipes.launch_training", lambda *a, **k: pytest.fail("must not launch"))
    at = app("image")
    picker = [s for s in at.selectbox if s.label == "Dataset folder"][0]
    picker.set_value(str(broken)).run()
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
    monkeypatch.setattr("core.launch.subprocess.Popen", fake_popen(calls))
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
    monkeypatch.setattr("core.launch.subprocess.Popen", fake_popen(calls))
    make_run(runs, "image-20260101-100000", "stopped")
    first, second = app("image"), app("image")  # both drawn while the run is stopped
    button(first, "Resume training").click().run()
    assert not first.exception and len(calls) == 1
    assert "Resume training" not in [b.label for b in first.button], "the pending launch replaces the button"
    assert "Stop training" in [b.label for b in first.button]
    from core.runs import RunError
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


def test_wandb_link_appears_when_the_run_has_one(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "finished", adapter=True)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "wandb_url": "https://wandb.ai/team/vlm/runs/abc"}))
    at = app("image")
    links = [e for e in at.get("link_button") if "wandb.ai" in e.proto.url]
    assert links, "a link to the W&B run"


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


@pytest.mark.parametrize("recipe, command", [("image", "python -m image_vlm.data download"), ("video", "python -m video_vlm.data import-nexar")])
def test_dataset_not_found_says_how_to_get_it(dirs, recipe, command):
    from ui.datasets import dataset_problem
    from ui.recipes import RECIPES

    cls = ImageConfig if recipe == "image" else VideoConfig
    cfg = cls.model_validate({"data": {"root": "/nowhere/set", "synthetic": False}})
    problem = dataset_problem(RECIPES[recipe], Path("/nowhere/set"), cfg)
    assert problem.startswith("dataset folder /nowhere/set not found")
    assert command in problem and "KAGGLE_API_TOKEN" in problem


def test_a_dataset_that_labels_one_field_says_so_where_it_is_chosen(dirs, tmp_path):
    """A Nexar import supervises event_type only: the video page says so next to the dataset picker."""
    from core.media.video import write_clip
    from video_vlm.data import import_nexar

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


# ------------------------------------------------------------------- the dataset and the model, beside their fields


def outside_expanders(at, kind: str) -> str:
    """The text of the page's `kind` elements (error, caption, ...) that are not inside a collapsed expander."""
    inside = {id(e) for expander in at.expander for e in getattr(expander, kind)}
    return "\n".join(str(e.value) for e in getattr(at, kind) if id(e) not in inside)


def type_into(select, text: str) -> None:
    """Type a new option into a select that accepts them: the browser sends the typed text itself (AppTest's
    set_value sends only one of the options the page drew)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState
    from streamlit.testing.v1.element_tree import Selectbox

    class Typed(Selectbox):
        @property
        def _widget_state(self) -> WidgetState:
            return WidgetState(id=self.id, string_value=text)

    select.__class__ = Typed


def test_each_page_offers_only_its_own_recipes_datasets(dirs):
    _, data = dirs
    (data / "tiles" / "train" / "wildfire").mkdir(parents=True)
    (data / "clips" / "videos").mkdir(parents=True)
    (data / "clips" / "metadata.jsonl").write_text("")
    image = [s for s in app("image").selectbox if s.label == "Dataset folder"][0]
    assert "tiles" in image.options and not any("clips" in option for option in image.options), image.options
    video = [s for s in app("video").selectbox if s.label == "Dataset folder"][0]
    assert "clips" in video.options and not any("tiles" in option for option in video.options), video.options


def test_a_missing_dataset_is_said_beside_its_field_at_once(dirs, monkeypatch):
    """The full-size preset's data/wildfire is not there: the picker says "missing" and why, outside the collapsed
    dataset check, before anyone presses Start."""
    monkeypatch.setattr("ui.recipes.launch_training", lambda *a, **k: pytest.fail("must not launch"))
    at = app("image")
    [s for s in at.selectbox if s.label == "Preset"][0].set_value("full-size: qwen2_5_vl_7b_grpo").run()
    assert not at.exception, at.exception
    picker = [s for s in at.selectbox if s.label == "Dataset folder"][0]
    assert picker.options[0] == "wildfire (preset, missing)", picker.options
    beside = outside_expanders(at, "error")
    assert "wildfire: dataset folder not found" in beside and "python -m image_vlm.data download" in beside, beside


def test_a_typed_folder_becomes_the_selection_and_is_checked(dirs):
    """A folder typed into the picker is what the form uses, checked beside the field: one outside the data folder
    is refused, one that holds the other recipe's data is named as such."""
    runs, data = dirs
    (data / "clips" / "videos").mkdir(parents=True)
    at = app("image")
    type_into([s for s in at.selectbox if s.label == "Dataset folder"][0], str(runs))
    at.run()
    assert not at.exception, at.exception
    picker = [s for s in at.selectbox if s.label == "Dataset folder"][0]
    assert picker.value == str(runs), "the typed folder is the selection"
    assert f"Dataset folder {runs}: outside the data folder" in outside_expanders(at, "error")
    type_into([s for s in at.selectbox if s.label == "Dataset folder"][0], "clips")
    at.run()
    assert "holds a video dataset; this page trains on image datasets" in outside_expanders(at, "error")
    button(at, "Start training").click().run()
    assert "Not started:" in texts(at.error) and "holds a video dataset" in texts(at.error)


def test_an_unreachable_model_is_said_beside_its_field(dirs, monkeypatch):
    """A model id that is not on this machine (offline in tests) is refused beside the Model field, the estimate
    does not promise that it "trains all the same", and Start does not launch it."""
    monkeypatch.setattr("ui.recipes.launch_training", lambda *a, **k: pytest.fail("must not launch"))
    at = app("image")
    type_into([s for s in at.selectbox if s.label == "Model"][0], "nobody/no-such-model")
    at.run()
    assert not at.exception, at.exception
    assert "nobody/no-such-model is not in the Hugging Face cache" in outside_expanders(at, "error")
    assert "trains all the same" not in texts(at.caption)
    assert "No estimate: the model cannot be loaded" in texts(at.caption)
    button(at, "Start training").click().run()
    assert "Not started: model.name: nobody/no-such-model" in texts(at.error)
