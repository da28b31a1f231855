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


def warm_start_format(
    model_dir: Path, out_dir: Path, data_root: Path, steps: int = 60, seed: int = 0, **data_overrides
) -> Path:
    """Teach a tiny model the answer format with coin-flip answers, so GRPO has a signal to work with.

    Random weights never emit `<SOLUTION>`, so every reward is 0 and GRPO's advantages vanish. After this
    short SFT the model writes the format but guesses Yes/No independently of the image: correctness starts
    near 50 %, and anything above that later has to come from GRPO looking at the image.
    """
    import random

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from core.inference import build_inputs
    from core.media.image import open_image
    from image_vlm.config import ImageDataSection
    from image_vlm.task import image_size_arguments, prompt_messages, task_rows

    torch.manual_seed(seed)
    rng = random.Random(seed)
    data = ImageDataSection(root=str(data_root), max_pixels=3136, **data_overrides)
    processor = AutoProcessor.from_pretrained(model_dir, **image_size_arguments(data.max_pixels))
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    rows = task_rows(data, "train")
    # Coin-flip answers would teach the vision tower to erase the image (fire and no-fire tiles end up
    # with the same features), leaving GRPO nothing to learn from; only the language side learns the format.
    for name, param in model.named_parameters():
        param.requires_grad = not any(part in name.split(".") for part in ("visual", "merger"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for _ in range(steps):
        batch = rng.sample(rows, 4)
        prompts = [prompt_messages(data, open_image(r["image_path"])) for r in batch]
        answers = [f"<REASONING>I see.</REASONING><SOLUTION>{rng.choice(['Yes', 'No'])}</SOLUTION>" for _ in batch]
        full = [p + [{"role": "assistant", "content": [{"type": "text", "text": a}]}] for p, a in zip(prompts, answers)]
        inputs = build_inputs(processor, full, add_generation_prompt=False)
        prompt_lengths = build_inputs(processor, prompts)["attention_mask"].sum(1)
        lengths = inputs["attention_mask"].sum(1)
        labels = inputs["input_ids"].clone()
        width = labels.shape[1]
        for i in range(len(batch)):  # left-padded: the answer is the last (length - prompt_length) tokens
            labels[i, : width - int(lengths[i] - prompt_lengths[i])] = -100
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def warm_qwen(tmp_path_factory, wildfire_synthetic) -> Path:
    from core.tiny import tiny_model_path

    return warm_start_format(tiny_model_path("qwen2_5_vl"), tmp_path_factory.mktemp("warm-qwen"), wildfire_synthetic)


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
