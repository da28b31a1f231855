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


def clip_prompt(frames):
    return [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "What happens?"}]}]


def counted_image(family, section: ModelSection, config, size, max_pixels):
    kwargs = family.image_kwargs(max_pixels)
    processor = load_processor(section, **kwargs)
    image = Image.fromarray(np.zeros((*size, 3), np.uint8))
    inputs = build_inputs(processor, [image_prompt(image)])
    return visual_tokens_in(inputs, config), family.image_tokens(config, *size, kwargs)


def counted_clip(family, section: ModelSection, config, frames, size, side):
    timestamps = [index / 2 for index in range(frames)]
    kwargs = family.video_kwargs(timestamps, side)
    processor = load_processor(section)
    inputs = build_inputs(processor, [clip_prompt(np.zeros((frames, *size, 3), np.uint8))], **kwargs)
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
    in_prompt, arithmetic = counted_clip(family, section, config, frames, size, side=max(size))
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
        in_prompt, arithmetic = counted_clip(family, section, config, 4, (252, 448), side=448)
        assert in_prompt == arithmetic.tokens > 0


@pytest.mark.parametrize("model_id", list(PRESETS))
def test_parameter_counts_match_the_published_totals(model_id):
    family, preset = PRESETS[model_id]
    total = meta_parameter_counts(family.transformers_class(), preset.config())["total"]
    assert total == pytest.approx(preset.published_params * 1e9, rel=0.02)
