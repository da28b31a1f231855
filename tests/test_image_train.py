"""GRPO on the tiny Qwen2.5-VL: the run folder fills in, weights move, checkpoints reload, Stop and kill -9 are safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import IMAGE_SMOKE, ROOT, assert_learned_the_red_blob, latest_checkpoint, own_copy, run_cli
from core.runs import RunDir, stop_run
from image_vlm import evaluate as image_evaluate
from image_vlm import export as image_export
from image_vlm import train as image_train

TINY = "image_vlm/configs/tiny.yaml"


def tiny_args(run_dir: Path, model: Path, data: Path, *extra: str) -> list[str]:
    return [
        "--config", TINY, "--run-dir", str(run_dir), *IMAGE_SMOKE,
        f"model.name={model}", f"data.root={data}", "train.max_completion_length=24", *extra,
    ]


def lora_b_tensors(folder: Path) -> dict:
    weights = load_file(folder / "adapter_model.safetensors")
    return {k: v for k, v in weights.items() if "lora_B" in k}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, warm_qwen, wildfire_synthetic) -> RunDir:
    run = RunDir(tmp_path_factory.mktemp("runs") / "image-finished")
    code = image_train.main(tiny_args(run.path, warm_qwen, wildfire_synthetic, "train.max_steps=3", "logging.save_steps=2"))
    assert code == 0
    return run


@pytest.mark.slow  # trains from the 60-step warm start (warm_qwen)
def test_run_folder_holds_metrics_rewards_rollouts_and_adapter(finished_run):
    status = finished_run.read_status()
    assert status["state"] == "finished" and status["step"] == 3 and status["total"] == 3
    metrics = [m for m in finished_run.read_metrics() if "loss" in m]
    assert len(metrics) == 3
    for key in ("loss", "reward", "rewards/format_reward/mean", "rewards/correctness_reward/mean", "learning_rate"):
        assert all(key in m for m in metrics), key
    rollouts = finished_run.read_rollouts()
    assert rollouts and set(rollouts[0]["rewards"]) == {"format_reward", "correctness_reward"}
    assert {"completion", "answer", "label", "image_path"} <= set(rollouts[0])
    assert (finished_run.adapter_dir / "adapter_config.json").exists()
    assert (finished_run.adapter_dir / "processor_config.json").exists()
    # The launch's memory estimate is kept in the run folder (the log prints it, and the measured peak on CUDA).
    estimate = finished_run.read_estimate()
    assert estimate and estimate["params_total"] > 0 and estimate["visual_tokens_per_sample"] > 0


@pytest.mark.slow  # trains from the 60-step warm start (warm_qwen)
def test_lora_weights_changed(finished_run):
    """LoRA's B matrices start at zero; training must have moved them."""
    tensors = lora_b_tensors(finished_run.adapter_dir)
    assert tensors and any(t.abs().max() > 0 for t in tensors.values())


@pytest.mark.slow  # trains from the 60-step warm start (warm_qwen)
def test_checkpoint_reloads_with_its_step(finished_run, warm_qwen):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    checkpoint = finished_run.checkpoints_dir / "checkpoint-2"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 2
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(warm_qwen), str(checkpoint))
    loaded = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    saved = lora_b_tensors(checkpoint)
    assert len(loaded) == len(saved) and any(v.abs().max() > 0 for v in loaded.values())


@pytest.mark.slow  # trains from the 60-step warm start (warm_qwen)
def test_finished_run_is_refused_and_kept(finished_run, warm_qwen, wildfire_synthetic, capsys):
    before = finished_run.status_path.read_text()
    code = image_train.main(tiny_args(finished_run.path, warm_qwen, wildfire_synthetic, "train.max_steps=3", "logging.save_steps=2"))
    assert code == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert finished_run.status_path.read_text() == before and finished_run.adapter_dir.exists()


@pytest.mark.slow  # trains from the 60-step warm start (warm_qwen)
def test_evaluate_scores_base_and_tuned(finished_run, capsys):
    assert image_evaluate.main(["--run", str(finished_run.path), "--limit", "4"]) == 0
    report = json.loads((finished_run.eval_dir / "test.json").read_text())
    for name in ("base", "tuned"):
        metrics = report["models"][name]
        assert metrics["n"] == 4
        for key in ("accuracy", "precision", "recall", "f1", "format_rate", "unparseable", "confusion"):
            assert key in metrics
        assert sum(sum(row.values()) for row in metrics["confusion"].values()) == 4
    assert len(report["examples"]) == 4
    out = capsys.readouterr().out
    assert "accuracy" in out and "tuned" in out


@pytest.mark.slow  # trains from the 60-step warm start (warm_qwen)
def test_export_merges_into_a_standalone_model(finished_run, tmp_path):
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "merged"
    assert image_export.main(["--run", str(finished_run.path), "--out", str(out)]) == 0
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert not any("lora" in k for k in model.state_dict())
    assert list(out.glob("*.safetensors")) and (finished_run.adapter_dir / "adapter_config.json").exists()


@pytest.mark.slow  # trains from the 60-step warm start (warm_qwen)
def test_reward_weights_change_the_trainers_reward(tmp_path, warm_qwen, wildfire_synthetic):
    """The total reward TRL optimises is the weighted sum with OUR weights (the playbook ignored its UI's)."""
    totals = {}
    for weights in ((1.0, 0.0), (0.5, 3.0)):
        run = tmp_path / f"w-{weights[0]}-{weights[1]}"
        extra = ("train.max_steps=1", f"rewards.weights.format={weights[0]}", f"rewards.weights.correctness={weights[1]}")
        assert image_train.main(tiny_args(run, warm_qwen, wildfire_synthetic, *extra)) == 0
        logged = RunDir(run).read_metrics()[0]
        fmt, correct = logged["rewards/format_reward/mean"], logged["rewards/correctness_reward/mean"]
        assert fmt > 0, "the warm-started model should earn some format reward"
        assert logged["reward"] == pytest.approx(weights[0] * fmt + weights[1] * correct, abs=1e-4)
        totals[weights] = logged["reward"]
    assert totals[(1.0, 0.0)] != totals[(0.5, 3.0)]


def launch(run_dir: Path, model: Path, data: Path, *extra: str) -> subprocess.Popen:
    log = (run_dir.parent / f"{run_dir.name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "image_vlm.train", *tiny_args(run_dir, model, data, *extra)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.mark.slow  # trains from the 60-step warm start (warm_qwen)
def test_stop_saves_a_checkpoint_and_ends_stopped(tmp_path, warm_qwen, wildfire_synthetic):
    run = RunDir(tmp_path / "stop-me")
    proc = launch(run.path, warm_qwen, wildfire_synthetic, "train.max_steps=200", "logging.save_steps=1000")
    try:
        wait_until(lambda: run.read_status().get("step", 0) >= 1, 300, "the first step")
        assert "Stopping" in stop_run(run)[1]
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    status = run.read_status()
    assert status["state"] == "stopped", status
    checkpoint = latest_checkpoint(run)
    assert checkpoint is not None and checkpoint.name == f"checkpoint-{status['step']}"
    assert "Nothing to stop" in stop_run(run)[1]


@pytest.mark.slow  # trains from the 60-step warm start (warm_qwen)
def test_kill_9_then_relaunch_continues_from_the_checkpoint(tmp_path, warm_qwen, wildfire_synthetic):
    run = RunDir(tmp_path / "crashy")
    # Long enough that the kill lands mid-run: a 6-step tiny run could finish between two polls.
    steps = 30
    extra = (f"train.max_steps={steps}", "logging.save_steps=2")
    proc = launch(run.path, warm_qwen, wildfire_synthetic, *extra)
    try:
        wait_until(lambda: latest_checkpoint(run), 300, "the first checkpoint")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert run.read_status()["state"] == "crashed"
    resumed_from = int(latest_checkpoint(run).name.split("-")[1])
    result = run_cli("image_vlm.train", *tiny_args(run.path, warm_qwen, wildfire_synthetic, *extra))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    checkpoint = run.checkpoints_dir / f"checkpoint-{resumed_from}"
    # A kill after the last save keeps that checkpoint's weights rather than training a seventh step.
    assert f"resuming from {checkpoint}" in result.stdout or f"{checkpoint} is the last step" in result.stdout
    status = run.read_status()
    assert status["state"] == "finished" and status["step"] == steps
    # Steps the kill lost are logged once, by the resumed run: the lines after the checkpoint were dropped.
    assert [m["step"] for m in run.read_metrics() if "loss" in m] == list(range(1, steps + 1))


def test_config_errors_exit_2_before_loading_anything(tmp_path):
    result = run_cli("image_vlm.train", "--config", TINY, "--run-dir", str(tmp_path / "r"), "train.lerning_rate=1")
    assert result.returncode == 2
    assert "train.lerning_rate" in result.stderr and "learning_rate" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_the_tiny_preset_learns_to_see_the_red_blob(learned_image_run, tmp_path):
    """The shipped tiny preset, untouched but for its data folder (trained once per session, `learned_image_run`):
    the product's warm start teaches the format with coin-flip answers (the vision tower frozen), so GRPO starts at
    chance with the format in place; GRPO alone must then make the answer depend on the image, and held-out
    accuracy must show it."""
    assert_learned_the_red_blob(own_copy(learned_image_run, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("reasoning", [True, False])
def test_reasoning_or_answer_only_both_train_and_evaluate(tmp_path, wildfire_synthetic, reasoning):
    """`data.reasoning` reaches the warm-start targets, the format reward and evaluation's format check."""
    run = RunDir(tmp_path / "run")
    code = image_train.main([
        "--config", TINY, "--run-dir", str(run.path), f"data.root={wildfire_synthetic}", f"data.reasoning={str(reasoning).lower()}",
        "warm_start.max_steps=60", "train.max_steps=2", "train.per_device_train_batch_size=8", "logging.save_steps=1000",
    ])
    assert code == 0
    grpo = [m for m in run.read_metrics() if m.get("stage") == "grpo" and "loss" in m]
    assert grpo and grpo[0]["rewards/format_reward/mean"] >= 0.8
    completions = [r["completion"] for r in run.read_rollouts()]
    assert completions and all(("<REASONING>" in c) == reasoning for c in completions), completions[:4]
    assert image_evaluate.main(["--run", str(run.path), "--limit", "8"]) == 0
    report = json.loads((run.eval_dir / "test.json").read_text())
    assert report["models"]["tuned"]["format_rate"] >= 0.8 and report["models"]["base"]["format_rate"] == 0.0
    assert all(("<REASONING>" in e["tuned"]) == reasoning for e in report["examples"])
