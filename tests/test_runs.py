"""The run-folder contract: atomic status, crashed detection, config written once, GPU lock, stop requests."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from core.gpu_lease import GpuBusy, acquire_gpu_lock, gpu_lock_holder, release_gpu_lock
from core.jsonl import read_jsonl
from core.processes import process_owner
from core.runs import RunDir, RunError, list_runs, open_run_for_training, stop_run


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


def test_running_status_with_dead_pid_in_this_namespace_reads_as_crashed(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_status("running", owner={**process_owner(), "pid": dead_pid()})
    status = run.read_status()
    assert status["state"] == "crashed" and status["recorded_state"] == "running"


def other_namespace_owner(pid: int) -> dict:
    return {**process_owner(), "pid": pid, "namespace": "another-boot/pid:[1]", "app": "video-vlm"}


def test_a_pid_from_another_namespace_is_not_trusted_the_heartbeat_is(tmp_path):
    """Another container's pid may be dead here (or be someone else): only the heartbeat's age counts."""
    run = RunDir(tmp_path / "r")
    run.write_status("running", owner=other_namespace_owner(dead_pid()), heartbeat_timeout_s=5)
    run.beat()
    assert run.read_status()["state"] == "running"
    stale = time.time() - 6
    os.utime(run.heartbeat_path, (stale, stale))
    os.utime(run.status_path, (stale, stale))
    status = run.read_status()
    assert status["state"] == "crashed" and status["heartbeat_age_s"] >= 6


def test_a_live_pid_here_does_not_save_a_run_whose_heartbeat_stopped(tmp_path):
    """After a container restart, pid reuse can make a dead run's pid live again."""
    run = RunDir(tmp_path / "r")
    run.write_status("running", owner={**process_owner(), "pid": os.getpid()}, heartbeat_timeout_s=5)
    stale = time.time() - 30
    os.utime(run.status_path, (stale, stale))
    assert run.read_status()["state"] == "crashed"


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
    with pytest.raises(GpuBusy, match=r"GPU busy: run run-a \(command line on .*\) is training"):
        acquire_gpu_lock("run-b", tmp_path)
    release_gpu_lock(tmp_path)
    assert gpu_lock_holder(tmp_path) is None
    acquire_gpu_lock("run-c", tmp_path)
    assert gpu_lock_holder(tmp_path)["run_id"] == "run-c"
    release_gpu_lock(tmp_path)


def test_gpu_lock_held_by_another_process_and_freed_by_its_death(tmp_path):
    """kill -9 of the holder frees the GPU: the kernel drops flock() locks with the process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from core.gpu_lease import acquire_gpu_lock; import time; acquire_gpu_lock('other', {str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
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
    code, message = stop_run(run)
    assert code == 0 and "already finished" in message and not run.stop_path.exists()
    code, message = stop_run(RunDir(tmp_path / "missing"))
    assert code == 2 and "no such run" in message
    crashed = RunDir(tmp_path / "c")
    crashed.write_status("running", owner={**process_owner(), "pid": dead_pid()})
    code, message = stop_run(crashed)
    assert code == 0 and "crashed" in message and "Resume" in message


def test_stop_writes_a_request_and_signals_only_inside_the_owner_namespace(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = RunDir(tmp_path / "r")
        # The same pid number, recorded by a trainer in another container: it must not be signalled here.
        run.write_status("running", owner=other_namespace_owner(sleeper.pid))
        code, message = stop_run(run)
        assert code == 0 and message.startswith("Stopping")
        assert run.stop_requested(since=time.time() - 5)
        assert not run.stop_requested(since=time.time() + 5)  # a later launch ignores this request
        time.sleep(0.3)
        assert sleeper.poll() is None
        run.write_status("running", owner={**process_owner(), "pid": sleeper.pid})
        stop_run(run)
        assert sleeper.wait(timeout=10) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()


def test_metric_lines_after_a_resumed_step_are_dropped(tmp_path):
    run = RunDir(tmp_path / "r")
    for step in (1, 2, 3, 4):
        run.append_metric({"step": step, "loss": 1.0})
    run.append_metric({"step": 9, "stage": "other", "loss": 1.0})
    assert run.forget_after(2) == 2
    assert [(r["step"], r.get("stage")) for r in run.read_metrics()] == [(1, None), (2, None), (9, "other")]


def test_runs_cli_status_stop_and_list(tmp_path):
    run = RunDir(tmp_path / "image-1")
    run.write_status("running", owner=other_namespace_owner(12345), step=3, total=10)
    env = {**os.environ, "VLM_RUNS_DIR": str(tmp_path)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "core.runs", *args], capture_output=True, text=True, env=env, timeout=60)

    status = json.loads(cli("status", str(run.path)).stdout)
    assert status["state"] == "running" and status["step"] == 3 and status["total"] == 10
    assert status["heartbeat_age_s"] < 30 and status["owner"] == "video-vlm" and status["owned_here"] is False
    listed = cli("list")
    assert "image-1" in listed.stdout and "running" in listed.stdout and "video-vlm" in listed.stdout
    stopped = cli("stop", str(run.path))
    assert stopped.returncode == 0 and run.stop_path.exists()
    assert json.loads(cli("status", str(run.path)).stdout)["stop_requested"] is True
    missing = cli("stop", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such run" in missing.stderr


def test_a_resumed_run_does_not_read_the_stop_that_ended_its_last_launch(tmp_path):
    from core.runs import status_summary

    run = RunDir(tmp_path / "image-1")
    run.write_status("running", owner=other_namespace_owner(12345), step=3, total=10, launched=time.time() - 60)
    run.request_stop()
    assert status_summary(run)["stop_requested"] is True
    run.write_status("stopped")
    run.write_status("running", launched=time.time() + 5)  # resumed: a new launch, the old stop.json still there
    assert run.stop_path.exists() and status_summary(run)["stop_requested"] is False
    run.stop_path.write_text(json.dumps({"time": time.time() + 10}))  # a stop asked of this launch
    assert status_summary(run)["stop_requested"] is True


@pytest.mark.parametrize("recipe", ["image_vlm", "video_vlm"])
def test_evaluate_refuses_a_folder_that_is_not_a_run(recipe, tmp_path, capsys):
    import importlib

    evaluate = importlib.import_module(f"{recipe}.evaluate")
    assert evaluate.main(["--run", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a run folder (no config.yaml)" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("model: [unclosed\n")
    assert evaluate.main(["--run", str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_the_lock_lives_at_the_runs_root_wherever_the_run_folder_is(tmp_path, monkeypatch):
    from core.gpu_lease import lock_path

    monkeypatch.setenv("VLM_RUNS_DIR", str(tmp_path / "shared-runs"))
    assert lock_path() == tmp_path / "shared-runs" / ".gpu.lock"


HOLD_COMPARE = """
import sys, time
from core.gpu_lease import acquire_gpu_lock, release_gpu_lock
released = []
acquire_gpu_lock("image-1", sys.argv[1], kind="compare", on_release_request=lambda: released.append(time.time()))
print("held", flush=True)
for _ in range(200):
    time.sleep(0.1)
    if released:
        print("released", flush=True)
        break
time.sleep(30)
"""


def test_a_compare_model_in_another_process_yields_the_gpu_to_training(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_COMPARE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert gpu_lock_holder(tmp_path)["kind"] == "compare"
        with pytest.raises(GpuBusy, match="loaded in the compare view"):
            acquire_gpu_lock("video-2", tmp_path, wait_release_s=0)
        started = time.monotonic()
        acquire_gpu_lock("video-2", tmp_path)  # asks the compare holder to release, and waits for it
        assert time.monotonic() - started < 10
        assert holder.stdout.readline().strip() == "released"
        assert gpu_lock_holder(tmp_path)["run_id"] == "video-2"
    finally:
        release_gpu_lock(tmp_path)
        holder.kill()
        holder.wait()


def test_training_refuses_a_compare_lease(tmp_path):
    acquire_gpu_lock("video-3", tmp_path, kind="training")
    try:
        holder = subprocess.run([sys.executable, "-c", HOLD_COMPARE, str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert holder.returncode != 0 and "GPU busy: run video-3" in holder.stderr and "is training" in holder.stderr
    finally:
        release_gpu_lock(tmp_path)


def test_took_counts_only_the_time_a_run_ran(tmp_path, monkeypatch):
    """A run stopped at 10:00:30 and resumed an hour later ran 30 s + 20 s, not an hour."""
    import core.runs as runs_module

    clock = [1_000.0]
    monkeypatch.setattr(runs_module.time, "time", lambda: clock[0])
    run = RunDir(tmp_path / "image-x")
    run.write_status("starting")  # the launcher
    clock[0] += 5
    run.write_status("starting", pid=1)  # its trainer: the same launch
    run.write_status("running")
    clock[0] += 25
    assert run.write_status("stopped")["active_s"] == 30.0
    clock[0] += 3600  # sat stopped
    run.write_status("starting")
    run.write_status("running")
    clock[0] += 20
    status = run.write_status("finished")
    assert status["active_s"] == 50.0 and "active_since" not in status


def test_rollouts_carry_the_step_they_train(tmp_path):
    """TRL scores step N's completions while global_step still reads N - 1; the rows say step N, as the
    progress bar does when that step ends."""
    from types import SimpleNamespace

    from core.metrics import RolloutRecorder

    def length_reward(completions, **kwargs):
        return [float(len(c)) for c in completions]

    run = RunDir(tmp_path / "image-r")
    recorder = RolloutRecorder(run, [length_reward], text_of=str)
    (wrapped,) = recorder.wrapped()
    wrapped(["ab", "c"], trainer_state=SimpleNamespace(global_step=0), answer=["Yes", "No"])
    wrapped(["abc"], trainer_state=SimpleNamespace(global_step=1), answer=["Yes"])
    assert [row["step"] for row in run.read_rollouts()] == [1, 1, 2]
