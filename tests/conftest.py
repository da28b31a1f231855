"""Shared fixtures: tiny models and synthetic data built once per session in temporary folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Tiny models and W&B never touch the user's home folders during tests."""
    tiny = tmp_path_factory.mktemp("tiny-models")
    os.environ["VLM_TINY_DIR"] = str(tiny)
    os.environ["WANDB_MODE"] = "disabled"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return tiny


@pytest.fixture(scope="session")
def wildfire_synthetic(tmp_path_factory) -> Path:
    from image_vlm.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("wildfire") / "data", per_class=24, seed=0)


def run_cli(module: str, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m module args` from the repo root and return the finished process (output captured)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# The tiny image preset learns for minutes (full fine-tuning, a warm start, 250 GRPO steps of 32); the smoke
# tests of the run-folder contract need a few cheap LoRA steps of it instead.
IMAGE_SMOKE = (
    "warm_start.enabled=false", "finetune.method=lora", "finetune.r=8", "finetune.alpha=16",
    "train.per_device_train_batch_size=4", "train.temperature=1.0", "train.loss_type=dapo",
    "rewards.weights.format=1.0", "data.max_train_samples=32", "logging.save_steps=3",
)

# Likewise the tiny video preset fine-tunes in full for 120 steps; the contract tests train a few LoRA steps.
VIDEO_SMOKE = (
    "finetune.method=lora", "finetune.r=16", "finetune.alpha=32", "finetune.dropout=0.0",
    "finetune.vision_attention=true", "finetune.vision_mlp=true",
    "train.max_steps=6", "train.per_device_train_batch_size=4", "logging.save_steps=3",
)


@pytest.fixture(scope="session")
def warm_qwen(tmp_path_factory, wildfire_synthetic) -> Path:
    """The tiny Qwen after the product's warm start (coin-flip answers: the format, not the task).

    Random weights never emit `<SOLUTION>`, so every reward would be 0 and GRPO's advantages would vanish.
    The run's `stages/warm_start/model` is a whole model (the preset fine-tunes in full) that the smoke
    tests then start GRPO from.
    """
    from image_vlm import train

    run = tmp_path_factory.mktemp("warm-qwen") / "run"
    code = train.main([
        "--config", "image_vlm/configs/tiny.yaml", "--run-dir", str(run), f"data.root={wildfire_synthetic}",
        "warm_start.max_steps=60", "train.max_steps=1", "train.per_device_train_batch_size=4", "logging.save_steps=1000",
    ])
    assert code == 0
    return run / "stages" / "warm_start" / "model"


def write_audio_only(path) -> None:
    """An mp4 holding only an AAC audio stream: a "video" the data checks must reject."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(3):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
