"""The Runs page says what ran and how it did (method, model, best metric, verdict), offers each whole log as a
download, and archives an ended run by moving its folder aside (core/archive.py), never deleting it."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import app, button, make_run, texts


def rows_by_run(at) -> dict[str, dict]:
    return {row["run"]: row for row in at.dataframe[0].value.to_dict("records")}


def open_run(at, run_id: str):
    [s for s in at.selectbox if s.label == "Open run"][0].set_value(run_id).run()
    return at


def test_the_runs_table_says_method_model_best_metric_and_verdict(dirs):
    runs, _ = dirs
    lora = make_run(runs, "image-20260101-100000", "finished", adapter=True,
                    config_overrides={"finetune": {"method": "lora"}})
    (lora / "eval").mkdir()
    models = {"base": {"n": 48, "accuracy": 0.5}, "tuned": {"n": 48, "accuracy": 0.875}}
    (lora / "eval" / "test.json").write_text(json.dumps({"split": "test", "models": models, "verdict": "better",
                                                          "headline": {"verdict": "better"}}))
    older = make_run(runs, "image-20251231-100000", "finished", adapter=True)
    (older / "eval").mkdir()
    # A report from before verdicts.
    (older / "eval" / "test.json").write_text(json.dumps({"split": "test", "models": models}))
    make_run(runs, "video-20260101-090000", "failed", recipe="video")
    at = app("runs")
    assert not at.exception, at.exception
    rows = rows_by_run(at)
    assert rows["image-20260101-100000"]["method"] == "GRPO · LoRA"
    assert rows["image-20260101-100000"]["model"] == "tiny:qwen2_5_vl"
    assert rows["image-20260101-100000"]["best metric"] == "accuracy 0.875 (test; base 0.500)"
    assert rows["image-20260101-100000"]["verdict"] == "better"
    assert rows["image-20251231-100000"]["method"] == "GRPO · full fine-tuning"
    assert rows["image-20251231-100000"]["verdict"] == "accuracy 0.875 (test; base 0.500)", "no verdict: its metric"
    video = rows["video-20260101-090000"]
    assert video["method"] == "SFT · full fine-tuning" and video["model"] == "tiny:internvl"
    assert video["best metric"] == "reward 0.300 (training, best step 3)" and video["state"] == "failed"


def test_the_log_tab_shows_the_whole_log_and_offers_it_as_a_download(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "failed")
    lines = [f"line {index}: loading shard {index}" for index in range(1, 501)]
    (run / "train.log").write_text("\n".join(lines) + "\n")
    at = open_run(app("runs"), "image-20260101-100000")
    assert not at.exception, at.exception
    log = next(c.value for c in at.code if "line 250:" in str(c.value))
    assert "line 1: loading shard 1" in log and "line 500: loading shard 500" in log, "all of it, not only the tail"
    downloads = [d for d in at.get("download_button") if d.proto.label == "Download train.log"]
    assert downloads, [d.proto.label for d in at.get("download_button")]
    assert "train.log** (" in texts(at.markdown)


def test_archiving_a_failed_run_moves_its_folder_aside(dirs):
    runs, _ = dirs
    make_run(runs, "image-20260101-110000", "finished", adapter=True)
    failed = make_run(runs, "image-20260101-100000", "failed")
    (failed / "train.log").write_text("RuntimeError: out of GPU memory\n")
    at = open_run(app("runs"), "image-20260101-100000")
    button(at, "Archive run").click().run()
    assert not at.exception, at.exception
    moved = runs / ".archive" / "image-20260101-100000"
    assert not failed.exists() and (moved / "train.log").read_text() == "RuntimeError: out of GPU memory\n"
    assert json.loads((moved / "status.json").read_text())["state"] == "failed", "moved as it was, nothing deleted"
    assert list(rows_by_run(at)) == ["image-20260101-110000"]
    assert "Archived run image-20260101-100000" in texts(at.success)


def test_only_an_ended_run_is_archived(dirs):
    from core.archive import ArchiveError, archive_run
    from core.runs import RunDir

    runs, _ = dirs
    trainer = subprocess.Popen(["sleep", "60"])  # a live trainer: the run reads `running`, not `crashed`
    try:
        run = make_run(runs, "image-20260101-100000", "running", pid=trainer.pid)
        with pytest.raises(ArchiveError, match="is running: stop it first"):
            archive_run(RunDir(run), runs)
        assert run.exists()
        at = open_run(app("runs"), "image-20260101-100000")
        assert not [b for b in at.button if b.label == "Archive run"], "no Archive for a run that is still active"
    finally:
        trainer.kill()
        trainer.wait()
    at.run()  # the trainer is gone: the run reads crashed, and can be archived now
    assert button(at, "Archive run")


def test_stop_from_a_page_records_the_page_as_who_asked(dirs):
    """A Stop pressed on the Image VLM page is recorded as the page's request (stop.json's `by`, which the trainer
    turns into the run's stop reason), not as an anonymous SIGTERM."""
    runs, _ = dirs
    trainer = subprocess.Popen(["sleep", "60"])  # the SIGTERM shortcut lands on it
    try:
        run = make_run(runs, "image-20260101-100000", "running", pid=trainer.pid)
        (run / "heartbeat").touch()
        at = app("image")
        button(at, "Stop training").click().run()
    finally:
        trainer.kill()
        trainer.wait()
    assert not at.exception
    request = json.loads((run / "stop.json").read_text())
    assert request["by"]["app"] == "Image VLM page", request


def test_push_from_the_runs_page_shows_what_would_leave_then_needs_a_token(dirs, monkeypatch):
    """The page checks the repository id, lists the exported folder's files (a dry run of the push CLI) before it
    offers the upload, pushes privately only, and without a token says which variable to set."""
    runs, _ = dirs
    run = make_run(runs, "image-20260101-110000", "finished")
    merged = run / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    (merged / "model.safetensors").write_bytes(b"\0" * 12_345)
    (merged / "README.md").write_text("---\nbase_model: tiny:qwen2_5_vl\ntags:\n- vlm-playbook\n---\n# card\n")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    at = open_run(app("runs"), run.name)
    repo = next(t for t in at.text_input if t.label == "Hub repository (ORG/NAME)")
    repo.set_value("--public").run()
    assert "'--public' is not a repository id" in texts(at.error)
    assert button(at, "Check what would be pushed").disabled and button(at, "Push (private)").disabled

    repo.set_value("me/wildfire-tiny").run()
    button(at, "Check what would be pushed").click().run()
    listing = next(str(c.value) for c in at.code if "nothing sent" in str(c.value))
    assert "README.md" in listing and "model.safetensors  12.3 KB" in listing and "private" in listing, listing
    assert "checkpoints" not in listing and "train.log" not in listing
    button(at, "Push (private)").click().run()
    assert "no Hugging Face token: set HF_TOKEN" in texts(at.error), texts(at.error)
