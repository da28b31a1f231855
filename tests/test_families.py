"""The family table (`core.families`): for every family, the visual-token arithmetic the estimate uses equals what
the family's own processor puts in the prompt, for images and clips over several sizes, on its tiny processor and
at full size; the shipped full-size architectures match the published parameter counts on the meta device; and
the tiny kinds are exactly the table's families."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.architectures import full_size_processor_files, meta_parameter_counts
from core.config import ModelSection
from core.families import FAMILIES, family_by_key, shipped_presets
from core.generation import build_inputs
from core.models import load_processor
from core.tiny import TINY_KINDS, resolve_model_name

IMAGE_SIZES = [(64, 64), (90, 150), (350, 350), (123, 457), (360, 640)]
BUDGETS = [56 * 56, 112 * 112, 350 * 350]
VIDEO_FAMILIES = [family.key for family in FAMILIES if family.video_tokens is not None]
PRESETS = shipped_presets()


def visual_tokens_in(inputs, config) -> int:
    """Image and video placeholder tokens in a processed prompt, by the ids the model reads them with."""
    ids = {getattr(config, name, None) for name in ("image_token_id", "video_token_id", "image_token_index")} - {None}
    return sum(int((inputs["input_ids"] == token).sum()) for token in ids)


def image_prompt(image):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Fire?"}]}]


def clip_prompt(frames, timestamps):
    clip = {"type": "video", "video": frames, "timestamps_s": timestamps}
    return [{"role": "user", "content": [clip, {"type": "text", "text": "What happens?"}]}]


def counted_image(family, section: ModelSection, config, size, max_pixels):
    kwargs = family.image_kwargs(max_pixels)
    processor = load_processor(section, **kwargs)
    image = Image.fromarray(np.zeros((*size, 3), np.uint8))
    inputs = build_inputs(processor, [image_prompt(image)])
    return visual_tokens_in(inputs, config), family.image_tokens(config, *size, kwargs)


def counted_clip(family, section: ModelSection, config, frames, size):
    timestamps = [0.25 + index / 2 for index in range(frames)]
    processor = load_processor(section)
    # The clip carries its frame times, as the product's do; build_inputs asks the row for the same kwargs.
    inputs = build_inputs(processor, [clip_prompt(np.zeros((frames, *size, 3), np.uint8), timestamps)])
    kwargs = family.video_kwargs([(frames, *size)], [timestamps])
    return visual_tokens_in(inputs, config), family.video_tokens(config, frames, *size, kwargs)


def tiny(key: str):
    from transformers import AutoConfig

    section = ModelSection(name=f"tiny:{key}")
    return section, AutoConfig.from_pretrained(resolve_model_name(section.name))


def test_the_tiny_kinds_are_the_table():
    assert TINY_KINDS == tuple(family.key for family in FAMILIES)
    for family in FAMILIES:
        assert family_by_key(family.key) is family
    with pytest.raises(ValueError, match="expected one of"):
        family_by_key("llava")


@pytest.mark.parametrize("max_pixels", BUDGETS)
@pytest.mark.parametrize("size", IMAGE_SIZES)
@pytest.mark.parametrize("key", TINY_KINDS)
def test_image_tokens_match_the_tiny_processor(key, size, max_pixels):
    family = family_by_key(key)
    section, config = tiny(key)
    in_prompt, arithmetic = counted_image(family, section, config, size, max_pixels)
    assert in_prompt == arithmetic.tokens > 0


@pytest.mark.parametrize("frames", [2, 5])
@pytest.mark.parametrize("size", [(64, 64), (90, 150), (252, 448)])
@pytest.mark.parametrize("key", VIDEO_FAMILIES)
def test_clip_tokens_match_the_tiny_processor(key, size, frames):
    family = family_by_key(key)
    section, config = tiny(key)
    in_prompt, arithmetic = counted_clip(family, section, config, frames, size)
    assert in_prompt == arithmetic.tokens > 0


@pytest.mark.parametrize("model_id", list(PRESETS))
def test_full_size_tokens_match_the_full_size_processor(model_id, tmp_path):
    """The shipped architecture with the processor at its published image processing (tiny tokenizer)."""
    family, preset = PRESETS[model_id]
    section = ModelSection(name=str(full_size_processor_files(family.key, tmp_path / "processor")))
    config = preset.config(load_processor(section).tokenizer)
    for size in ((350, 350), (360, 640)):
        in_prompt, arithmetic = counted_image(family, section, config, size, 350 * 350)
        assert in_prompt == arithmetic.tokens > 0, size
    if family.video_tokens is not None:
        in_prompt, arithmetic = counted_clip(family, section, config, 4, (252, 448))
        assert in_prompt == arithmetic.tokens > 0


@pytest.mark.parametrize("model_id", list(PRESETS))
def test_parameter_counts_match_the_published_totals(model_id):
    family, preset = PRESETS[model_id]
    total = meta_parameter_counts(family.transformers_class(), preset.config())["total"]
    assert total == pytest.approx(preset.published_params * 1e9, rel=0.02)


def tiny_llava(folder):
    """A model outside the table that transformers' image-text class loads: a two-layer LLaVA."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14),
        text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=256),
        image_token_id=255,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.save_pretrained(folder)
    return model


def test_a_model_outside_the_table_is_described_and_adapts_every_language_linear(tmp_path):
    from core.architectures import family_lines
    from core.config import FinetuneSection
    from core.estimate import EstimateError, family_of_architecture
    from core.models import lora_target_modules

    model = tiny_llava(tmp_path / "llava")
    lines = "\n".join(family_lines(ModelSection(name=str(tmp_path / "llava")), "image"))
    assert "'llava' is not in the family table" in lines
    assert "every linear layer of the language model" in lines and "estimate cannot be made" in lines
    with pytest.raises(EstimateError, match="not in the family table.*training still works"):
        family_of_architecture(ModelSection(name="llava"), model.config)
    # Only the vision toggles on: a generic model ignores the toggles and adapts the whole language model.
    targets = lora_target_modules(model, FinetuneSection(language_attention=False, language_mlp=False, vision_attention=True))
    linears = {name for name, module in model.named_modules() if isinstance(module, __import__("torch").nn.Linear)}
    language = {name for name in linears if ".language_model." in name}
    assert set(targets) == language and len(language) == 2 * 7


def test_an_architecture_without_an_image_text_class_is_one_line(tmp_path):
    from transformers import GPT2Config

    from core.architectures import family_lines
    from core.config import ConfigError

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ConfigError, match=r"model type 'gpt2'.* no image-text-to-text class.*supported families: Qwen2.5-VL, InternVL3"):
        family_lines(ModelSection(name=str(tmp_path / "gpt2")), "image")


def test_a_family_row_names_itself_in_the_run_log():
    from core.architectures import family_lines

    assert family_lines(ModelSection(name="tiny:internvl"), "video") == ["model family: InternVL3"]


@pytest.mark.parametrize("key", TINY_KINDS)
def test_each_lora_toggle_selects_its_own_modules(key):
    """On each family's tiny model, every toggle alone selects linear layers, all of its tower and block kind, and
    together they select every linear layer of both towers' attention and MLP blocks, never the projector or head."""
    import torch
    from transformers import AutoModelForImageTextToText

    from core.config import FinetuneSection
    from core.models import lora_target_modules

    family = family_by_key(key)
    model = AutoModelForImageTextToText.from_pretrained(resolve_model_name(f"tiny:{key}"))
    linears = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    toggles = {
        ("vision", "attention"): "vision_attention", ("vision", "mlp"): "vision_mlp",
        ("language", "attention"): "language_attention", ("language", "mlp"): "language_mlp",
    }
    chosen = {}
    for (tower, block), toggle in toggles.items():
        off = {name: False for name in toggles.values()}
        names = set(lora_target_modules(model, FinetuneSection(**{**off, toggle: True})))
        assert names, (key, toggle)
        for name in names:
            parts = name.split(".")
            in_vision = any(part in family.vision_parts for part in parts)
            assert in_vision == (tower == "vision"), (key, toggle, name)
            block_parts = family.attention_parts if block == "attention" else family.mlp_parts
            assert any(part in block_parts for part in parts), (key, toggle, name)
            assert not any(part in family.projector_parts for part in parts), (key, toggle, name)
        chosen[toggle] = names
    assert not set.intersection(*chosen.values())
    everything = set(lora_target_modules(model, FinetuneSection(**{name: True for name in toggles.values()})))
    assert everything == set.union(*chosen.values()) and everything <= linears and "lm_head" not in everything
