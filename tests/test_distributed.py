"""The distributed path: the tiny recipes under `accelerate launch --num_processes 2`, on CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import IMAGE_SMOKE, ROOT, VIDEO_SMOKE
from core.runs import RunDir


def failure_output(result: subprocess.CompletedProcess) -> str:
    """What a failed launch printed: the tails, and every line rank 0 wrote (the launcher names the first rank
    that failed, but the other's lines fill the tail)."""
    rank0 = [line for line in result.stderr.splitlines() if line.startswith("[rank0]")]
    return "\n".join([result.stdout[-3000:], *rank0[-60:], result.stderr[-3000:]])


@pytest.mark.slow
def test_two_process_grpo_only_rank0_writes_the_run_folder(tmp_path, warm_qwen, wildfire_synthetic):
    run = RunDir(tmp_path / "ddp-run")
    command = [
        # Not --cpu: accelerate then starts one lone process (the run refuses it); the DDP config forms the job over
        # gloo on CPU as it does over NCCL on GPUs.
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/ddp.yaml",
        "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "image_vlm.train", "--config", "image_vlm/configs/tiny.yaml", "--run-dir", str(run.path), *IMAGE_SMOKE,
        f"model.name={warm_qwen}", f"data.root={wildfire_synthetic}", "train.max_steps=2",
        "train.per_device_train_batch_size=4", "train.max_completion_length=24", "logging.save_steps=2",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, failure_output(result)
    status = run.read_status()
    assert status["state"] == "finished" and status["step"] == 2
    assert status["distributed"] == "DDP over gloo on CPU, 2 processes", status  # one job of two, not two alone
    # Only rank 0 writes: one status owner, one metrics line per logged step, rollouts from one rank.
    assert status["pid"] != os.getpid()
    steps = [m["step"] for m in run.read_metrics() if "loss" in m]
    assert steps == [1, 2], steps
    assert {r["step"] for r in run.read_rollouts()} <= {1, 2}  # the step each batch trains
    assert (run.adapter_dir / "adapter_config.json").exists()
    # Two processes x 4 completions per device: the global batch holds 8 completions per step.
    assert len(run.read_rollouts()) == 2 * 4


@pytest.mark.slow
def test_the_fsdp_config_trains_the_video_recipe_to_an_adapter_that_loads(tmp_path):
    """The shipped FSDP config on a machine without CUDA: the two processes form one job (one rank saves, once),
    the log says what ran, and the adapter loads. Before, each process trained alone as rank 0, and the two final
    saves raced on one staging folder."""
    from core.models import load_tuned
    from video_vlm.config import VideoConfig

    run = RunDir(tmp_path / "fsdp-run")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/fsdp.yaml",
        "--num_processes", "2", "-m", "video_vlm.train", "--config", "video_vlm/configs/tiny.yaml",
        "--run-dir", str(run.path), *VIDEO_SMOKE, f"data.root={tmp_path / 'dashcam'}", "train.max_steps=2",
        "train.per_device_train_batch_size=2", "logging.save_steps=2",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, failure_output(result)
    # Both ranks ask for the synthetic clips; one writes them while the other waits. Before, both wrote the same
    # files at once, and a rank could read a clip the other was rewriting.
    assert result.stdout.count("generating synthetic moving-square clips") == 1, result.stdout[-3000:]
    assert "distributed: DDP over gloo on CPU, 2 processes (FSDP was asked for" in result.stdout
    assert result.stdout.count(f"saved {run.adapter_dir}") == 1, result.stdout[-3000:]
    assert result.stdout.count("saved " + str(run.checkpoints_dir / "checkpoint-2")) == 1
    assert run.read_status()["state"] == "finished" and run.read_status()["step"] == 2
    cfg = VideoConfig.model_validate(run.read_config())
    tuned = load_tuned(cfg.model, run.adapter_dir, cfg.finetune)
    assert any("lora_" in name for name, _ in tuned.named_parameters())

