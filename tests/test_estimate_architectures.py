"""The estimate knows the architectures that are not a stack of full-attention layers: a hybrid model's
linear-attention layers keep a fixed-size state and its sliding-window layers at most their window, however long the
generation; a mixture of experts is counted (total and active parameters) and refused in one line."""

from __future__ import annotations

import pytest

from core.config import FinetuneSection, ModelSection, load_config
from core.estimate import GIB, EstimateError, Workload, device_target, estimate_memory, human_count

TEXT = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16)


def qwen3_5_config(layer_types):
    from transformers import Qwen3_5Config

    text = dict(TEXT, num_hidden_layers=len(layer_types), layer_types=layer_types, linear_num_key_heads=2,
                linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16, linear_conv_kernel_dim=4)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)
    return Qwen3_5Config(text_config=text, vision_config=vision)


def cache_gib(config, tokens: int) -> float:
    """The generation cache part of a GRPO-like step generating 8 sequences of `tokens` tokens."""
    from core.architectures import meta_model

    workload = Workload(sequences=1, prompt_tokens=tokens, visual_tokens=0, answer_tokens=0, vision_patches=0,
                        logits_tokens=1, generated_sequences=8)
    model = ModelSection(name="local-test-model")
    estimate = estimate_memory(model, FinetuneSection(), "adamw_torch", workload, device_target("h100", model),
                               config, meta_model(config))
    return estimate.parts_gib["generation KV cache"] - 8 * config.text_config.vocab_size * 8 / GIB


def test_linear_attention_layers_keep_a_fixed_state_not_a_growing_cache():
    hybrid = qwen3_5_config(["linear_attention"] * 3 + ["full_attention"])
    full = qwen3_5_config(["full_attention"] * 4)
    # Per generated token, only the one full-attention layer grows: keys and values, 2 heads x 16, bf16, 8 sequences.
    grows = (cache_gib(hybrid, 2000) - cache_gib(hybrid, 1000)) * GIB
    assert grows == pytest.approx(1000 * 8 * 1 * (2 * 2 * 16) * 2)
    assert (cache_gib(full, 2000) - cache_gib(full, 1000)) * GIB == pytest.approx(4 * grows)
    # The linear layers' state is there, and the same at any length: fp32 key x value matrices per value head and
    # the convolution's last 4 inputs.
    state = 8 * 3 * (4 * 16 * 16 * 4 + (2 * 2 * 16 + 4 * 16) * 4 * 2)
    assert cache_gib(hybrid, 1000) * GIB == pytest.approx(1000 * 8 * (2 * 2 * 16) * 2 + state)


def test_sliding_window_layers_cache_at_most_their_window():
    from transformers import Gemma3Config

    text = dict(TEXT, num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"], sliding_window=256)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    per_token = 8 * (2 * 2 * 16) * 2
    assert cache_gib(config, 200) * GIB == pytest.approx(2 * 200 * per_token)
    assert cache_gib(config, 1000) * GIB == pytest.approx((256 + 1000) * per_token)


def test_a_mixture_of_experts_is_counted_and_refused_in_one_line(tmp_path, capsys):
    from transformers import Qwen3_5MoeConfig

    from image_vlm.config import ImageConfig
    from image_vlm.train import main

    text = dict(TEXT, num_hidden_layers=2, layer_types=["linear_attention", "full_attention"], num_experts=8,
                num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)
    folder = tmp_path / "moe"
    folder.mkdir()
    Qwen3_5MoeConfig(text_config=text, vision_config=vision).save_pretrained(folder)

    # What a token runs: everything but 6 of the 8 experts' weights, counted on the meta model.
    from core.architectures import meta_model

    empty = meta_model(Qwen3_5MoeConfig.from_pretrained(folder))
    total = sum(p.numel() for p in empty.parameters())
    experts = sum(p.numel() for name, p in empty.named_parameters() if "experts" in name.split("."))
    assert 0 < experts < total
    code = main(["--config", "image_vlm/configs/tiny.yaml", "--estimate", f"model.name={folder}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"is a mixture of experts (8 experts, 2 per token): {human_count(total)} parameters in all" in err
    assert f"about {human_count(round(total - experts * 6 / 8))} active per token" in err
    assert "no memory figure" in err
    from image_vlm.estimate import estimate

    with pytest.raises(EstimateError, match="mixture of experts"):
        estimate(load_config(ImageConfig, "image_vlm/configs/tiny.yaml", [f"model.name={folder}"]))
