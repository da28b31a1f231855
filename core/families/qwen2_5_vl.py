"""Qwen2.5-VL: the family row, its published 7B architecture, its tiny model and its visual-token arithmetic.

Images and frames are resized to multiples of 28 px (14 px patches merged 2x2) within a pixel budget, so the
token count grows with the picture; a clip's frames are patched in pairs (temporal patch 2).
"""

from __future__ import annotations

from typing import Any

from core.families.base import Family, Preset, VisualTokens, clip_metadata, published_config
from core.families.tiny_parts import (
    CLIP_MEAN,
    CLIP_STD,
    QWEN_ADDED_TOKENS,
    TEXT_HEADS,
    TEXT_HIDDEN,
    TEXT_INTERMEDIATE,
    TEXT_KV_HEADS,
    TEXT_LAYERS,
    VISION_HEADS,
    VISION_HIDDEN,
    VISION_INTERMEDIATE,
    VISION_LAYERS,
    build_tokenizer,
    generation_config,
    padded_vocab_size,
)

MODEL_ID = "Qwen/Qwen2.5-VL-7B-Instruct"
# The vision tokens of the Qwen VL tokenizers, by the config keys that hold their ids (Qwen2.5-VL and Qwen3-VL).
QWEN_VISION_TOKENS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}
# The smallest picture the product asks the processor for (4 tokens); the largest is the recipe's budget.
MIN_PIXELS = 56 * 56
# Frames of a clip: the processor's own floor would upscale small frames, so the product passes the budget.
VIDEO_MIN_PIXELS = 56 * 56

# Chat template of Qwen/Qwen2.5-VL-7B-Instruct (chat_template.json), verbatim.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2.5-VL-7B splits its 64 rotary pairs 16/24/24 over (time, height, width); keep the ratio.
TINY_MROPE_SECTION = [2, 3, 3]

# Qwen2.5-VL: 14 px patches merged 2x2, so one text token covers 28x28 px. A 56x56 image gives
# 4 tokens and anything larger is shrunk to at most 112x112 px (16 tokens).
TINY_PATCH = 14
TINY_MERGE = 2
TINY_MIN_PIXELS = 56 * 56
TINY_MAX_PIXELS = 112 * 112

# Qwen/Qwen2.5-VL-7B-Instruct, config.json as published (checked against a verbatim copy of the hub file, exported
# by transformers 4.53.1), written in transformers 5's nested form (rope_theta moves into rope_parameters).
QWEN2_5_VL_7B = {
    "text_config": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "max_window_layers": 28,
        "use_sliding_window": False,
        "rms_norm_eps": 1e-6,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "hidden_act": "silu",
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "out_hidden_size": 3584,
        "initializer_range": 0.02,
    },
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": False,
}


def qwen2_5_vl_7b_config(tokenizer=None, updates: dict[str, dict[str, Any]] | None = None):
    """Qwen2.5-VL-7B's architecture; with `tokenizer`, its special-token ids (`published_config`)."""
    return published_config("Qwen2_5_VLConfig", QWEN2_5_VL_7B, tokenizer, updates, QWEN_VISION_TOKENS, bos="<|endoftext|>", eos="<|im_end|>")


def tiny_tokenizer():
    return build_tokenizer(list(QWEN_ADDED_TOKENS), CHAT_TEMPLATE, model_max_length=131072)


def build_tiny(tokenizer):
    """Return (model, processor) shaped like Qwen2.5-VL-7B-Instruct, but tiny."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    token_id = tokenizer.convert_tokens_to_ids
    text_config = {
        "vocab_size": padded_vocab_size(tokenizer),
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": TEXT_INTERMEDIATE,
        "num_hidden_layers": TEXT_LAYERS,
        "num_attention_heads": TEXT_HEADS,
        "num_key_value_heads": TEXT_KV_HEADS,
        "max_position_embeddings": 128000,
        "max_window_layers": TEXT_LAYERS,
        "use_sliding_window": False,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": TINY_MROPE_SECTION},
        "bos_token_id": token_id("<|endoftext|>"),
        "eos_token_id": token_id("<|im_end|>"),
        "pad_token_id": token_id("<|endoftext|>"),
    }
    vision_config = {
        "depth": VISION_LAYERS,
        "hidden_size": VISION_HIDDEN,
        "intermediate_size": VISION_INTERMEDIATE,
        "num_heads": VISION_HEADS,
        "hidden_act": "silu",
        "patch_size": TINY_PATCH,
        "spatial_merge_size": TINY_MERGE,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "window_size": 112,
        # The real model mixes windowed and full attention; the last block is full here.
        "fullatt_block_indexes": [VISION_LAYERS - 1],
        "out_hidden_size": TEXT_HIDDEN,
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)

    # Images and video frames go through the same patching, so both processors share one geometry.
    vision_geometry = dict(
        size={"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS},
        patch_size=TINY_PATCH,
        temporal_patch_size=2,
        merge_size=TINY_MERGE,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    image_processor = Qwen2VLImageProcessor(**vision_geometry)
    video_processor = Qwen2VLVideoProcessor(**vision_geometry)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    model.generation_config = generation_config(tokenizer, stop=("<|im_end|>", "<|endoftext|>"), pad="<|endoftext|>")
    return model, processor


def pixel_budget(max_pixels: int, min_pixels: int = MIN_PIXELS) -> dict[str, Any]:
    """Processor kwargs that cap each picture at `max_pixels` (transformers 5 spells the budget as `size`).

    >>> pixel_budget(350 * 350)
    {'size': {'shortest_edge': 3136, 'longest_edge': 122500}}
    """
    return {"size": {"shortest_edge": min(min_pixels, max_pixels), "longest_edge": max_pixels}}


def resized(height: int, width: int, size: dict[str, int], factor: int) -> tuple[int, int]:
    """The processor's own `smart_resize`: multiples of `factor` within the pixel budget, aspect kept."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    return smart_resize(height, width, factor=factor, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])


def image_tokens(config, height: int, width: int, image_kwargs: dict[str, Any]) -> VisualTokens:
    """Tokens after the merger, and patches through the vision tower, of one image.

    >>> image_tokens(qwen2_5_vl_7b_config(), 350, 350, pixel_budget(350 * 350))  # a Kaggle wildfire tile
    VisualTokens(tokens=144, patches=576, wrapper_tokens=0)
    """
    patch, merge = config.vision_config.patch_size, config.vision_config.spatial_merge_size
    h, w = resized(height, width, image_kwargs["size"], patch * merge)
    patches = (h // patch) * (w // patch)
    return VisualTokens(patches // (merge * merge), patches)


def video_kwargs(shapes: list[tuple[int, int, int]], timestamps: list[list[float]]) -> dict[str, Any]:
    """Frames keep their sampled size (the processor's floor would upscale small ones), and the clip's real times
    set its temporal position ids (`second_per_grid_ts`).

    >>> video_kwargs([(4, 252, 448)], [[0.25, 0.75, 1.25, 1.75]])["size"]
    {'shortest_edge': 3136, 'longest_edge': 200704}
    """
    side = max(max(height, width) for _, height, width in shapes)
    return {
        **pixel_budget(side * side, VIDEO_MIN_PIXELS),
        "video_metadata": [clip_metadata(times) for times in timestamps],
    }


def video_tokens(config, frames: int, height: int, width: int, kwargs: dict[str, Any]) -> VisualTokens:
    """Tokens and patches of a clip: frames are patched in pairs (the last one repeated for an odd count).

    >>> video_tokens(qwen2_5_vl_7b_config(), 8, 252, 448, video_kwargs([(8, 252, 448)], [[0.5 * i for i in range(8)]]))
    VisualTokens(tokens=576, patches=2304, wrapper_tokens=0)
    """
    vision = config.vision_config
    patch, merge, temporal = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
    h, w = resized(height, width, kwargs["size"], patch * merge)
    steps = -(-frames // temporal)
    patches = steps * (h // patch) * (w // patch)
    return VisualTokens(patches // (merge * merge), patches)


FAMILY = Family(
    key="qwen2_5_vl",
    title="Qwen2.5-VL",
    model_types=("qwen2_5_vl",),
    presets=(Preset(MODEL_ID, "Qwen2.5-VL 7B Instruct", 8.29, qwen2_5_vl_7b_config),),
    model_class="Qwen2_5_VLForConditionalGeneration",
    tiny_tokenizer=tiny_tokenizer,
    build_tiny=build_tiny,
    image_tokens=image_tokens,
    video_tokens=video_tokens,
    image_kwargs=pixel_budget,
    video_kwargs=video_kwargs,
    processor_classes=("Qwen2_5_VLProcessor",),
)
