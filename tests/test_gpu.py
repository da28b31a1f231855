"""The paths only a GPU takes, on the tiny models: bf16 LoRA, bf16 full fine-tuning, QLoRA, the attention kernels,
Liger, vLLM rollouts, the compare view on the GPU, and the measured peak beside the estimate. `make test-gpu` runs
them with tests/test_gpu_full_size.py (the same paths at 7-8B); without CUDA they are skipped, each saying why.

Sized for a lent H100/H200 (about two minutes all told): two steps per run, tiny models built locally.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli
from core.runs import RunDir

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: run `make test-gpu` on a GPU machine"),
]

IMAGE_TINY = "image_vlm/configs/tiny.yaml"
VIDEO_TINY = "video_vlm/configs/tiny.yaml"


def train(module: str, config: str, run: RunDir, *overrides: str) -> RunDir:
    """Two steps through the recipe's CLI, then what a finished run must show beyond its state: finite losses in
    metrics.jsonl, a measured CUDA peak beside the estimate (so it ran on the GPU), and weights that moved."""
    result = run_cli(module, "--config", config, "--run-dir", str(run.path), "train.max_steps=2", "logging.save_steps=2", *overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert run.read_status()["state"] == "finished"
    losses = [record["loss"] for record in run.read_metrics() if "loss" in record]
    assert losses and all(math.isfinite(loss) for loss in losses), losses
    assert_measured_beside_estimate(run)
    artifact = run.final_artifact()
    assert artifact is not None
    if (artifact / "adapter_model.safetensors").exists():  # LoRA B starts at zero: two steps must have moved it
        lora_b = [tensor for name, tensor in load_file(artifact / "adapter_model.safetensors").items() if "lora_B" in name]
        assert lora_b and any(tensor.abs().sum() > 0 for tensor in lora_b), "the adapter did not train"
    return run


def assert_measured_beside_estimate(run: RunDir) -> None:
    estimate = run.read_estimate()
    assert estimate and estimate["measured_peak_gib"]["allocated"] > 0
    print(json.dumps({"run": run.id, "estimated_peak_gib": estimate["peak_memory_gib"], "measured": estimate["measured_peak_gib"]}))


@pytest.mark.parametrize("module,config", [("image_vlm.train", IMAGE_TINY), ("video_vlm.train", VIDEO_TINY)])
def test_bf16_lora_trains_and_records_its_measured_peak(module, config, tmp_path):
    run = train(module, config, RunDir(tmp_path / "run"), "model.dtype=bfloat16")
    assert (run.adapter_dir / "adapter_config.json").exists()


def test_bf16_full_fine_tuning_trains(tmp_path):
    run = train("video_vlm.train", VIDEO_TINY, RunDir(tmp_path / "run"), "model.dtype=bfloat16", "finetune.method=full")
    assert run.final_artifact() == run.model_dir


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed (the gpu extra)")
def test_qlora_quantizes_the_language_model_only_and_trains(tmp_path):
    import bitsandbytes as bnb

    from core.config import FinetuneSection, ModelSection
    from core.families import PROJECTOR_PARTS, VISION_PARTS
    from core.models import load_model

    model = load_model(ModelSection(name="tiny:internvl"), FinetuneSection(method="qlora"))
    four_bit = {name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert four_bit, "QLoRA quantized nothing"
    assert not [name for name in four_bit if any(part in name.split(".") for part in (*VISION_PARTS, *PROJECTOR_PARTS))]
    train("video_vlm.train", VIDEO_TINY, RunDir(tmp_path / "run"), "finetune.method=qlora")


@pytest.mark.parametrize("attention", ["sdpa", "flash_attention_2"])
def test_attention_kernels_train(attention, tmp_path):
    if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed")
    train("image_vlm.train", IMAGE_TINY, RunDir(tmp_path / "run"), "model.dtype=bfloat16", f"model.attn_implementation={attention}")


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="liger-kernel is not installed (the gpu extra)")
def test_liger_kernels_train(tmp_path):
    train("image_vlm.train", IMAGE_TINY, RunDir(tmp_path / "run"), "model.dtype=bfloat16", "train.trainer.use_liger_kernel=true")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (no release TRL 1.16 supports matches torch 2.15; README)")
def test_vllm_colocate_rollouts_train(tmp_path):
    train("image_vlm.train", IMAGE_TINY, RunDir(tmp_path / "run"), "model.dtype=bfloat16", "train.use_vllm=true", "train.vllm_gpu_memory_utilization=0.2")


@pytest.mark.parametrize("method", ["lora", "full"])
def test_compare_answers_on_the_gpu_from_two_sets_of_weights(method, tmp_path):
    """The compare view's model on CUDA: base and tuned answers differ, and the base one is the base model's own."""
    from conftest import last, tiny_run
    from core.generation import generate
    from core.models import load_model
    from ui.compare_models import image_messages, load_compare_model, stream_answer

    run, cfg, image = tiny_run(tmp_path, method)
    artifact = run.final_artifact()
    loaded = load_compare_model("image", run.id, str(run.path), str(artifact), artifact.stat().st_mtime)
    assert next(loaded.model.parameters()).device.type == "cuda"
    messages = image_messages(cfg, image)
    base_text = last(stream_answer(loaded, messages, use_adapter=False))
    tuned_text = last(stream_answer(loaded, messages, use_adapter=True))
    base = load_model(cfg.model).to("cuda").eval()
    direct_base = generate(base, loaded.processor, [messages], max_new_tokens=cfg.eval.max_new_tokens)[0]
    assert base_text.strip() == direct_base.strip(), "the base column is the base model's own answer"
    assert base_text != tuned_text
