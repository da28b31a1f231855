"""QLoRA quantizes the language model only: checked on empty (meta-device) models of both shipped architectures,
and on the config the loader hands to transformers (no GPU or bitsandbytes needed for either)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from core.architectures import meta_model
from core.config import FinetuneSection, ModelSection
from core.families import shipped_presets
from core.models import load_model, qlora_keep_unquantized, quantized_in_qlora

PRESETS = shipped_presets()


@pytest.mark.parametrize("model_id", list(PRESETS))
def test_vision_tower_and_projector_stay_out_of_4bit(model_id):
    family, preset = PRESETS[model_id]
    config = preset.config()
    model = meta_model(config)
    linears = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    kept = {name for name in linears if not quantized_in_qlora(name, family)}
    vision_or_projector = {
        name for name in linears if any(part in name.split(".") for part in (*family.vision_parts, *family.projector_parts))
    }
    assert vision_or_projector and vision_or_projector <= kept
    assert kept == vision_or_projector | {"lm_head"}
    # The text tower's blocks, under whatever name the family gives the tower (SmolVLM2: `text_model`).
    # Every layer's attention and MLP projections (7 in most layers; 8 in Qwen3.5's linear attention, 6 in Gemma 4's
    # global layers, whose values are their keys).
    language = [name for name in linears - vision_or_projector if ".layers." in name]
    layers = [int(name.split(".layers.")[1].split(".")[0]) for name in language]
    assert sorted(set(layers)) == list(range(config.text_config.num_hidden_layers))
    assert min(layers.count(index) for index in set(layers)) >= 6
    assert all(quantized_in_qlora(name, family) for name in language)


def test_the_loader_asks_transformers_for_exactly_that(monkeypatch):
    captured = {}

    def from_pretrained(name, **kwargs):
        captured.update(kwargs)
        return "model"

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else real_find_spec(name, *a))
    monkeypatch.setattr("transformers.AutoModelForImageTextToText.from_pretrained", from_pretrained)
    assert load_model(ModelSection(), FinetuneSection(method="qlora")) == "model"
    quantization = captured["quantization_config"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4"
    family, _ = PRESETS[ModelSection().name]
    assert quantization.llm_int8_skip_modules == list(qlora_keep_unquantized(family))


def test_qlora_without_cuda_or_bitsandbytes_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU.*finetune.method=lora"):
        load_model(ModelSection(), FinetuneSection(method="qlora"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a))
    with pytest.raises(RuntimeError, match="needs bitsandbytes: install the gpu extra"):
        load_model(ModelSection(), FinetuneSection(method="qlora"))


def test_memory_cap_lands_on_each_ranks_own_gpu(monkeypatch):
    """Under accelerate launch each rank caps LOCAL_RANK's device, not GPU 0 (the CUDA calls are recorded)."""
    from types import SimpleNamespace

    from core.models import apply_memory_cap

    capped = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=128 * 2**30))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda fraction, device: capped.append((fraction, device)))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert "capped at 100 GiB of 128 GiB" in apply_memory_cap(100)
    assert capped == [(100 / 128, 1)]


def test_the_summary_counts_4bit_layers_and_those_in_the_vision_part():
    """The line a QLoRA run prints says how many layers are 4-bit, and that none is in the vision tower or projector."""
    from torch import nn

    from core.models import trainable_summary

    class Linear4bit(nn.Linear):  # bitsandbytes' class name; bitsandbytes itself needs CUDA
        pass

    model = nn.Module()
    model.language_model = nn.Sequential(Linear4bit(4, 4), Linear4bit(4, 4))
    model.visual = nn.Sequential(nn.Linear(4, 4))
    assert trainable_summary(model).endswith("; 2 linear layers in 4-bit, 0 of them in the vision tower or projector")
    model.multi_modal_projector = Linear4bit(4, 4)
    assert "3 linear layers in 4-bit, 1 of them in the vision tower or projector" in trainable_summary(model)
    assert "4-bit" not in trainable_summary(nn.Sequential(nn.Linear(4, 4)))
