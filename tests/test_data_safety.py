"""Data safety on a shared box: synthetic data never lands in a real dataset, one trainer per run however many
tabs press Resume, a save that crashes at any moment leaves a checkpoint to resume from, one bad path is one bad
line, and a run says who started it and who stopped it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.checkpoints import CHECKSUMS, choose_resume_checkpoint, complete_checkpoints, rotated_after_seal
from core.config import ConfigError
from core.gpu_lease import busy_message, gpu_lock_holder
from core.launch import launch_training
from core.runs import RunDir, RunError, stop_run

# ---------------------------------------------------------------------------------------------- synthetic data


def test_synthetic_images_are_never_generated_into_a_real_dataset_missing_its_train_split(tmp_path):
    from image_vlm.config import ImageDataSection
    from image_vlm.synthetic import terrain_tile
    from image_vlm.task import ensure_dataset

    root = tmp_path / "wildfire"
    for split in ("valid", "test"):
        (root / split / "wildfire").mkdir(parents=True)
        terrain_tile(np.random.default_rng(0), fire=True).save(root / split / "wildfire" / "real.png")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))

    with pytest.raises(ConfigError) as refused:
        ensure_dataset(ImageDataSection(root=str(root), synthetic=True))
    message = str(refused.value)
    assert "\n" not in message and str(root) in message and "test/, valid/" in message and "no train/" in message
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before, "nothing is written into the folder"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert ensure_dataset(ImageDataSection(root=str(empty), synthetic=True)) == empty
    assert (empty / "train" / "wildfire").is_dir(), "an empty folder still gets the synthetic set"


def test_synthetic_clips_are_never_generated_into_a_real_dataset_missing_its_metadata(tmp_path):
    from video_vlm.config import VideoDataSection
    from video_vlm.task import ensure_dataset

    root = tmp_path / "dashcam"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "real.mp4").write_bytes(b"a real clip")
    (root / "labels.csv").write_text("id,label\n")

    with pytest.raises(ConfigError) as refused:
        ensure_dataset(VideoDataSection(root=str(root), synthetic=True))
    message = str(refused.value)
    assert "\n" not in message and str(root) in message and "labels.csv, videos/" in message
    assert "no metadata.jsonl" in message
    assert sorted(p.name for p in root.rglob("*")) == ["labels.csv", "real.mp4", "videos"]


# ---------------------------------------------------------------------------------------------- one trainer per run

# A trainer that does nothing: it takes the lease its launcher hands over, keeps the run folder's contract
# (owner, heartbeat, stop requests) through the product's RunControl, notes that it started, and waits for a stop.
HARMLESS_TRAINER = '''
import os, sys, time
from core.control import RunControl, run_lifecycle
from core.gpu_lease import acquire_gpu_lock, release_gpu_lock
from core.runs import RunDir

run = RunDir(sys.argv[sys.argv.index("--run-dir") + 1])
acquire_gpu_lock(run.id, kind="training")
with open(run.path / "trainers.txt", "a") as started:
    started.write(f"{os.getpid()}\\n")
control = RunControl(keep_handlers=True)
with run_lifecycle(run, control, heartbeat_timeout_s=30):
    run.write_status("running")
    deadline = time.monotonic() + 120
    while not control.poll() and time.monotonic() < deadline:
        time.sleep(0.05)
    control.mark_stopping()
release_gpu_lock()
'''
HARMLESS = "harmless_vlm.train"


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """A runs root (and GPU lock) of the test's own, and the harmless trainer importable by its children."""
    package = tmp_path / "modules" / "harmless_vlm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text(HARMLESS_TRAINER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(package.parent), os.environ.get("PYTHONPATH")])))
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("VLM_RUNS_DIR", str(root))
    return root


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def stopped_run(path: Path) -> RunDir:
    run = RunDir(path)
    run.write_status("stopped", step=4, total=10)
    run.config_path.write_text("{}\n")
    return run


def test_resume_pressed_in_three_tabs_at_once_starts_one_trainer_and_never_marks_the_live_run(runs):
    for attempt in range(10):
        run = stopped_run(runs / f"image-race-{attempt}")
        barrier = threading.Barrier(3)
        outcomes: list = []

        # Bound now: a click thread that outlives its join timeout must not see the next attempt's run.
        def resume(barrier=barrier, outcomes=outcomes, run=run):
            barrier.wait()
            try:
                outcomes.append(launch_training(HARMLESS, run, config_path=run.config_path))
            except BaseException as error:  # noqa: BLE001 - the test sorts what each click got
                outcomes.append(error)

        clicks = [threading.Thread(target=resume) for _ in range(3)]
        for click in clicks:
            click.start()
        for click in clicks:
            click.join(timeout=60)
        trainers = [o for o in outcomes if isinstance(o, subprocess.Popen)]
        try:
            refusals = [o for o in outcomes if not isinstance(o, subprocess.Popen)]
            assert len(trainers) == 1, f"attempt {attempt}: {outcomes}"
            assert all(isinstance(err, RunError) for err in refusals), f"attempt {attempt}: {refusals!r}"
            assert all("\n" not in str(err) and str(err).startswith(f"Run {run.id} is already") for err in refusals)
            # wait_for calls the predicate before it returns, within this attempt.
            status = wait_for(
                lambda: (s := run.read_status())["state"] == "running" and s, 60, "the trainer to run"  # noqa: B023
            )
            assert "error" not in status, status
            assert len((run.path / "trainers.txt").read_text().split()) == 1, "one trainer started"
        finally:
            for process in trainers:
                end(process)


# ---------------------------------------------------------------------------------------- who started, who stopped


def test_a_run_started_from_the_page_says_so_in_its_status_and_the_gpu_banner(runs):
    run = RunDir(runs / "image-page")
    process = launch_training(HARMLESS, run, config_text="{}\n")
    try:
        assert run.read_status()["owner"]["app"] == "Harmless VLM page"
        assert busy_message(gpu_lock_holder()) == "GPU busy: run image-page (Harmless VLM page) is training"
        status = wait_for(lambda: (s := run.read_status())["state"] == "running" and s, 60, "the trainer to run")
        assert status["owner"]["app"] == "Harmless VLM page" and status["owner"]["pid"] == process.pid
        assert busy_message(gpu_lock_holder()) == "GPU busy: run image-page (Harmless VLM page) is training"
    finally:
        end(process)


def test_a_stop_from_the_page_is_recorded_as_one_and_the_command_line_keeps_its_words(runs):
    run = RunDir(runs / "image-stop")
    process = launch_training(HARMLESS, run, config_text="{}\n")
    try:
        wait_for(lambda: run.read_status()["state"] == "running", 60, "the trainer to run")
        code, message = stop_run(run, by="Image VLM page")  # writes the request, then SIGTERMs the trainer here
        assert code == 0 and message.startswith("Stopping")
        assert process.wait(timeout=30) == 0
    finally:
        end(process)
    status = run.read_status()
    assert status["state"] == "stopped" and status["stop_reason"] == "stop requested from the Image VLM page"

    # The same trainer run from the command line: its owner and its stop say "command line", as before.
    cli = RunDir(runs / "image-cli")
    cli.path.mkdir()
    process = subprocess.Popen([sys.executable, "-m", HARMLESS, "--run-dir", str(cli.path)], start_new_session=True)
    try:
        status = wait_for(lambda: (s := cli.read_status())["state"] == "running" and s, 60, "the CLI trainer to run")
        assert status["owner"]["app"].startswith("command line on ")
        stop_run(cli)
        assert process.wait(timeout=30) == 0
    finally:
        end(process)
    assert cli.read_status()["stop_reason"].startswith("stop requested from the command line on ")


# ---------------------------------------------------------------------------------------------- the save window


class Crash(Exception):
    """The process dying at this point of a save."""


def tiny_trainer(output_dir: Path, callbacks: list, save_total_limit: int = 1, max_steps: int = 3):
    """A real transformers Trainer on a two-weight model, saving every step, with the run's own save hook."""
    import torch
    from transformers import Trainer, TrainingArguments

    class Line(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, labels):
            return {"loss": ((self.weight * x - labels) ** 2).mean()}

    rows = [{"x": torch.tensor([float(i)]), "labels": torch.tensor([2.0 * i])} for i in range(8)]
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, save_strategy="steps", save_steps=1,
        save_total_limit=save_total_limit, per_device_train_batch_size=2, report_to=[], use_cpu=True,
        logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
    )
    return Trainer(model=Line(), args=args, train_dataset=rows, callbacks=callbacks)


class CrashOnSave:
    """Dies in `on_save` at `step`: after the Trainer wrote checkpoint-`step`, before anything of ours ran."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class _Crash(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                if state.global_step == step:
                    raise Crash(f"killed after the Trainer saved step {step}")

        return _Crash()


def test_a_crash_between_the_trainers_save_and_its_checksums_leaves_a_checkpoint_to_resume_from(tmp_path):
    from core.callbacks import RunMetricsCallback

    run = RunDir(tmp_path / "run")
    run.write_status("running")
    folder = run.checkpoints_dir
    trainer = tiny_trainer(folder, [CrashOnSave(2), RunMetricsCallback(run)], save_total_limit=1)
    with pytest.raises(Crash), rotated_after_seal(trainer):
        trainer.train()
    assert [p.name for p in complete_checkpoints(folder)] == ["checkpoint-1"]
    assert not (folder / "checkpoint-2" / CHECKSUMS).exists(), "the crash came before the new checkpoint was sealed"
    assert choose_resume_checkpoint(folder, log=lambda line: None) == folder / "checkpoint-1"


def test_rotation_keeps_the_newest_complete_checkpoints_and_a_crash_inside_it_loses_nothing(tmp_path, monkeypatch):
    import shutil

    from core.callbacks import RunMetricsCallback

    run = RunDir(tmp_path / "run")
    run.write_status("running")
    trainer = tiny_trainer(run.checkpoints_dir, [RunMetricsCallback(run)], save_total_limit=2, max_steps=4)
    with rotated_after_seal(trainer):
        trainer.train()
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["checkpoint-3", "checkpoint-4"]
    assert [p.name for p in complete_checkpoints(run.checkpoints_dir)] == ["checkpoint-3", "checkpoint-4"]
    assert trainer.args.save_total_limit == 2, "the Trainer's own setting is given back"

    # Killed while deleting the checkpoint the new one replaces (whoever deletes it): the new one must be sealed.
    other = RunDir(tmp_path / "other")
    other.write_status("running")

    def dies_midway(path, ignore_errors=False):
        (Path(path) / "optimizer.pt").unlink(missing_ok=True)
        raise Crash(f"killed while deleting {path}")

    monkeypatch.setattr(shutil, "rmtree", dies_midway)
    trainer = tiny_trainer(other.checkpoints_dir, [RunMetricsCallback(other)], save_total_limit=1, max_steps=3)
    with pytest.raises(Crash), rotated_after_seal(trainer):
        trainer.train()
    assert [p.name for p in complete_checkpoints(other.checkpoints_dir)] == ["checkpoint-2"]


# --------------------------------------------------------------------------------------- one bad path, one bad line


def test_a_nul_byte_in_a_metadata_path_is_that_lines_problem(tmp_path):
    from video_vlm.data import verify_dataset
    from video_vlm.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "clips", n=3, seed=0)
    lines = (root / "metadata.jsonl").read_text().splitlines()
    second = json.loads(lines[1])
    lines[1] = json.dumps({**second, "video": "videos/synth_0001.mp4\u0000.txt"})
    lines.append(json.dumps({**second, "video": "videos/caf\udce9.mp4"}))  # not UTF-8: no file can be named so
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")

    report = verify_dataset(root, progress=False)
    assert [item.line_no for item in report.items] == [1, 3], "the rest of the dataset is used"
    assert [(p.line_no, p.kind) for p in report.problems] == [(2, "bad_path"), (4, "bad_path")]
    assert "NUL byte" in report.problems[0].message and report.problems[0].message.startswith("line 2: ")


def test_an_image_path_no_file_can_have_is_skipped_not_fatal(tmp_path):
    from image_vlm.data import drop_unreadable, verify_image_folder
    from image_vlm.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "tiles", per_class=20, size=16, seed=0)
    # A file whose name is not UTF-8 (copied from an old archive): listed by the folder, left out by verify.
    folder = root / "train" / "wildfire"
    os.rename(folder / "wildfire_0000.png", os.fsencode(folder) + b"/caf\xe9.png")
    manifest = verify_image_folder(root, progress=False)
    assert manifest.counts["train"] == {"nowildfire": 20, "wildfire": 19}
    (excluded,) = manifest.excluded
    assert excluded["reason"] == "the file name is not UTF-8 (training data needs text names); rename the file"

    # A row whose path holds a NUL byte (an edited manifest, a pairs file): skipped, the other rows kept.
    rows = [{"image_path": str(path)} for path, _ in manifest.split("train")]
    rows.insert(3, {"image_path": str(root / "train" / "wildfire" / "x\x00.png")})
    kept, skipped = drop_unreadable(rows, root, log=lambda line: None)
    assert skipped == 1 and len(kept) == 39
