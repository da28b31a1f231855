"""The run-folder contract: atomic status, crashed detection, config written once, GPU lock."""

import json
import os
import subprocess
import sys

import pytest

from core.jobs import GpuBusy, acquire_gpu_lock, gpu_lock_holder, release_gpu_lock, stop_training
from core.runs import RunDir, RunError, list_runs, open_run_for_training, read_jsonl


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_status_is_written_atomically_and_merges_fields(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_status("starting", pid=os.getpid(), total=10)
    run.update_progress(3, 10)
    status = run.read_status()
    assert status["state"] == "starting" and status["step"] == 3 and status["total"] == 10 and "started" in status
    assert not list(run.path.glob("*.tmp"))
    with pytest.raises(ValueError, match="allowed"):
        run.write_status("exploded")


def test_running_status_with_dead_pid_reads_as_crashed(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_status("running", pid=dead_pid())
    status = run.read_status()
    assert status["state"] == "crashed" and status["recorded_state"] == "running"


def test_missing_folder_reads_as_missing_not_an_exception(tmp_path):
    assert RunDir(tmp_path / "gone").read_status()["state"] == "missing"
    assert RunDir(tmp_path / "gone").read_metrics() == []


def test_torn_metrics_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert list(read_jsonl(path)) == [{"step": 1, "loss": 2.0}]


def test_finished_run_is_refused_and_untouched(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_config("a: 1\n")
    run.write_status("finished")
    before = run.status_path.read_text()
    with pytest.raises(RunError, match="already holds a finished run"):
        open_run_for_training(run.path, "image", {"a": 1}, "a: 1\n")
    assert run.status_path.read_text() == before


def test_resume_with_a_different_config_is_refused(tmp_path):
    run = open_run_for_training(tmp_path / "r", "image", {"a": {"b": 1}}, "a:\n  b: 1\n")
    run.write_status("stopped")
    with pytest.raises(RunError, match="a.b"):
        open_run_for_training(run.path, "image", {"a": {"b": 2}}, "a:\n  b: 2\n")
    assert open_run_for_training(run.path, "image", {"a": {"b": 1}}, "a:\n  b: 1\n").path == run.path


def test_new_runs_get_distinct_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_RUNS_DIR", str(tmp_path))
    first = open_run_for_training(None, "image", {}, "{}\n")
    first.write_status("starting", pid=os.getpid())
    second = open_run_for_training(None, "image", {}, "{}\n")
    assert first.path != second.path and first.path.parent == tmp_path
    second.write_status("finished")
    assert {r.path for r in list_runs(tmp_path)} == {first.path, second.path}


def test_gpu_lock_is_exclusive_and_released(tmp_path):
    acquire_gpu_lock("run-a", tmp_path)
    assert gpu_lock_holder(tmp_path)["run_id"] == "run-a"
    with pytest.raises(GpuBusy, match="GPU busy: run run-a is training"):
        acquire_gpu_lock("run-b", tmp_path)
    release_gpu_lock(tmp_path)
    assert gpu_lock_holder(tmp_path) is None
    acquire_gpu_lock("run-c", tmp_path)
    assert gpu_lock_holder(tmp_path)["run_id"] == "run-c"
    release_gpu_lock(tmp_path)


def test_gpu_lock_held_by_another_process_and_freed_by_its_death(tmp_path):
    """kill -9 of the holder frees the GPU: the kernel drops flock() locks with the process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from core.jobs import acquire_gpu_lock; import time; acquire_gpu_lock('other', {str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert gpu_lock_holder(tmp_path)["run_id"] == "other"
        with pytest.raises(GpuBusy, match="run other"):
            acquire_gpu_lock("mine", tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert gpu_lock_holder(tmp_path) is None
    acquire_gpu_lock("mine", tmp_path)
    release_gpu_lock(tmp_path)


def test_lock_file_left_without_a_holder_is_free(tmp_path):
    (tmp_path / ".gpu.lock").write_text(json.dumps({"run_id": "ghost", "pid": dead_pid()}))
    assert gpu_lock_holder(tmp_path) is None


def test_stop_with_nothing_running_says_so(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_status("finished")
    assert "Nothing to stop" in stop_training(run)
    assert "Nothing to stop" in stop_training(RunDir(tmp_path / "missing"))


@pytest.mark.parametrize("recipe", ["image_vlm", "video_vlm"])
def test_evaluate_refuses_a_folder_that_is_not_a_run(recipe, tmp_path, capsys):
    import importlib

    evaluate = importlib.import_module(f"{recipe}.evaluate")
    assert evaluate.main(["--run", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a run folder (no config.yaml)" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("model: [unclosed\n")
    assert evaluate.main(["--run", str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err
