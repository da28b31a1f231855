"""InternVL3 and InternVL3.5 (the `-hf` checkpoints): two family rows, their published 8B architectures, their tiny
models and their visual-token arithmetic.

Every image and frame is resized to one square tile (448 px at full size; dynamic tiling is switched off), 14 px
patches, pixel-shuffled by 0.5: a fixed 256 tokens whatever the picture's size. The processor writes
"FrameN: <img>" and "</img>" around each frame of a clip.

InternVL3.5 is InternVL3 with a Qwen3 text tower (q/k norms, no q/k/v bias) and Qwen3's tokenizer, whose four
extra tokens move `<IMG_CONTEXT>` up by four; the vision tower, projector, processing and arithmetic are the same,
and both share `model_type` "internvl" (the text tower's tells them apart).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from core.families.base import Family, Preset, VisualTokens, published_config
from core.families.tiny_parts import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    QWEN3_ADDED_TOKENS,
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

MODEL_ID = "OpenGVLab/InternVL3-8B-hf"
MODEL_ID_3_5 = "OpenGVLab/InternVL3_5-8B-HF"
# "Frame3: <img>" ... "</img>\n" around each frame's image tokens.
FRAME_WRAPPER_TOKENS = 7

# InternVL3-hf appends these to the Qwen2.5 tokenizer. `<video>` is only a placeholder the
# processor expands into per-frame image tokens; it is kept as one id so it never splits.
EXTRA_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<img>", True),
    ("</img>", True),
    ("<IMG_CONTEXT>", True),
    ("<quad>", True),
    ("</quad>", True),
    ("<ref>", True),
    ("</ref>", True),
    ("<box>", True),
    ("</box>", True),
    ("<video>", True),
)

# Named tokens InternVLProcessor reads from the tokenizer (tokenizer.start_image_token, ...).
NAMED_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}

# Chat template of OpenGVLab/InternVL3-8B-hf (as written by transformers' InternVL converter). InternVL3.5 uses it
# too: the converter that writes it handles Qwen3 text towers alike, but InternVL3_5-8B-HF's own
# chat_template.json was not found, so that it is the same is UNVERIFIED.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}"
    "{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{'<|im_start|>assistant\n' }}"
    "{% endif %}"
)

# InternVL: every image/frame is resized to 56x56 -> 4x4 patches -> pixel shuffle 0.5 -> 4 tokens.
TINY_IMAGE_SIZE = 56
TINY_PATCH = 14
TINY_DOWNSAMPLE = 0.5
TINY_TOKENS_PER_IMAGE = int((TINY_IMAGE_SIZE // TINY_PATCH) ** 2 * TINY_DOWNSAMPLE**2)
# Text tower and projector init std (the library default is 0.02). At 0.02 a 2-layer, 64-wide tower attends
# almost uniformly for hundreds of steps, and the video learnability test's motion fields stay at chance;
# at 0.06 they are learned in ~500 steps. The vision tower keeps its own 0.02.
TINY_INIT_STD = 0.06

# OpenGVLab/InternVL3-8B-hf: InternViT-300M-448px-V2.5 + Qwen2.5-7B, pixel-shuffle 0.5 -> 256 tokens per 448 px
# frame. Checked against published config fragments (vision 1024/4096/24 layers/16 heads/448/14, vocab 151674,
# image_token_id 151667, image_seq_length 256, downsample_ratio 0.5); fields not in them (qkv bias, LayerNorm,
# layer scale 0.1, mean pooling) are InternViT-300M's and transformers' InternVLVisionConfig defaults.
INTERNVL3_8B = {
    "text_config": {
        "model_type": "qwen2",
        "vocab_size": 151674,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "max_window_layers": 28,
        "use_sliding_window": False,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "hidden_act": "gelu",
        "image_size": 448,
        "patch_size": 14,
        "attention_bias": True,
        "use_qk_norm": False,
        "norm_type": "layer_norm",
        "layer_norm_eps": 1e-6,
        "layer_scale_init_value": 0.1,
        "use_absolute_position_embeddings": True,
        "use_mean_pooling": True,
    },
    "image_token_id": 151667,
    "image_seq_length": 256,
    "downsample_ratio": 0.5,
    "projector_hidden_act": "gelu",
    "vision_feature_layer": -1,
    "vision_feature_select_strategy": "default",
    "tie_word_embeddings": False,
}


# OpenGVLab/InternVL3_5-8B-HF: the same InternViT-300M and projector, with Qwen3-8B as the text tower (explicit
# head_dim 128, q/k norms, no q/k/v bias, vocab 151936) and <IMG_CONTEXT> at 151671, as an InternVL3.5-2B-HF config
# gives it. The 8B -HF config.json itself was not found: these values are Qwen3-8B's published ones, UNVERIFIED
# for this repo (its parameter count matches the published 8.5 B within 0.4 %).
INTERNVL3_5_8B = {
    **INTERNVL3_8B,
    "text_config": {
        "model_type": "qwen3",
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "image_token_id": 151671,
}


def internvl3_8b_config(tokenizer=None, updates: dict[str, dict[str, Any]] | None = None):
    """InternVL3-8B-hf's architecture; with `tokenizer`, its special-token ids (`core.families.base.published_config`);
    `updates` changes sections of it, for a smaller model of the same shape."""
    return internvl_config(INTERNVL3_8B, tokenizer, updates)


def internvl3_5_8b_config(tokenizer=None, updates: dict[str, dict[str, Any]] | None = None):
    """InternVL3.5-8B-HF's architecture, as `internvl3_8b_config` gives InternVL3's."""
    return internvl_config(INTERNVL3_5_8B, tokenizer, updates)


def internvl_config(published: dict[str, Any], tokenizer, updates: dict[str, dict[str, Any]] | None):
    return published_config("InternVLConfig", published, tokenizer, updates, {"image_token_id": "<IMG_CONTEXT>"},
                            bos="<|endoftext|>", eos="<|im_end|>")


def tiny_tokenizer():
    added = list(QWEN_ADDED_TOKENS) + list(EXTRA_TOKENS)
    return build_tokenizer(added, CHAT_TEMPLATE, model_max_length=8192, extra_special_tokens=dict(NAMED_TOKENS))


def tiny_tokenizer_3_5():
    """Qwen3's added tokens, then InternVL's: `<IMG_CONTEXT>` lands 28 ids past `<|endoftext|>`, as in the real one."""
    added = list(QWEN3_ADDED_TOKENS) + list(EXTRA_TOKENS)
    return build_tokenizer(added, CHAT_TEMPLATE, model_max_length=40960, extra_special_tokens=dict(NAMED_TOKENS))


def build_tiny(tokenizer):
    """Return (model, processor) shaped like InternVL3-8B-hf, but tiny."""
    from transformers import Qwen2Config

    token_id = tokenizer.convert_tokens_to_ids
    text_config = Qwen2Config(
        vocab_size=padded_vocab_size(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=TEXT_HEADS,
        num_key_value_heads=TEXT_KV_HEADS,
        max_position_embeddings=32768,
        max_window_layers=TEXT_LAYERS,
        use_sliding_window=False,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=token_id("<|endoftext|>"),
        eos_token_id=token_id("<|im_end|>"),
        pad_token_id=token_id("<|endoftext|>"),
        tie_word_embeddings=False,
        initializer_range=TINY_INIT_STD,
    )
    return build_tiny_around(tokenizer, text_config)


def build_tiny_3_5(tokenizer):
    """Return (model, processor) shaped like InternVL3.5-8B-HF, but tiny: a Qwen3 text tower."""
    from transformers import Qwen3Config

    token_id = tokenizer.convert_tokens_to_ids
    text_config = Qwen3Config(
        vocab_size=padded_vocab_size(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=TEXT_HEADS,
        num_key_value_heads=TEXT_KV_HEADS,
        head_dim=TEXT_HIDDEN // TEXT_HEADS,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        attention_bias=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=token_id("<|endoftext|>"),
        eos_token_id=token_id("<|im_end|>"),
        pad_token_id=token_id("<|endoftext|>"),
        tie_word_embeddings=False,
        initializer_range=TINY_INIT_STD,
    )
    return build_tiny_around(tokenizer, text_config)


def build_tiny_around(tokenizer, text_config):
    """The tiny InternVL vision tower, projector and processor around a tiny text tower."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
    )

    token_id = tokenizer.convert_tokens_to_ids
    vision_config = InternVLVisionConfig(
        hidden_size=VISION_HIDDEN,
        num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS,
        intermediate_size=VISION_INTERMEDIATE,
        image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH,
        attention_bias=True,
        use_qk_norm=False,
        norm_type="layer_norm",
        layer_norm_eps=1e-6,
        use_absolute_position_embeddings=True,
        use_mean_pooling=True,
    )
    config = InternVLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=token_id("<IMG_CONTEXT>"),
        image_seq_length=TINY_TOKENS_PER_IMAGE,
        downsample_ratio=TINY_DOWNSAMPLE,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    model = InternVLForConditionalGeneration(config)

    square = {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    # No dynamic tiling: one 56x56 tile per image keeps every image at a fixed token count.
    image_processor = GotOcr2ImageProcessor(
        size=square,
        crop_to_patches=False,
        min_patches=1,
        max_patches=1,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    video_processor = InternVLVideoProcessor(size=square, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=TINY_TOKENS_PER_IMAGE,
        chat_template=CHAT_TEMPLATE,
    )
    model.generation_config = generation_config(tokenizer, stop=("<|im_end|>", "<|endoftext|>"), pad="<|endoftext|>")
    return model, processor


def tile_side(config) -> int:
    """The side in pixels of a tile (configs spell it as an int or a pair)."""
    size = config.vision_config.image_size
    return size[0] if isinstance(size, (list, tuple)) else size


def tile_tokens(config) -> VisualTokens:
    """Tokens after pixel shuffle, and patches incl. the class token, of one tile.

    >>> tile_tokens(internvl3_8b_config())
    VisualTokens(tokens=256, patches=1025, wrapper_tokens=0)
    """
    vision = config.vision_config
    patch = vision.patch_size[0] if isinstance(vision.patch_size, (list, tuple)) else vision.patch_size
    patches = (tile_side(config) // patch) ** 2
    return VisualTokens(int(patches * config.downsample_ratio**2), patches + 1)


def one_tile(max_pixels: int) -> dict[str, Any]:
    """One tile per image, whatever its size: dynamic tiling would multiply the tokens of a large picture."""
    return {"crop_to_patches": False}


def image_tokens(config, height: int, width: int, image_kwargs: dict[str, Any]) -> VisualTokens:
    return tile_tokens(config)


def video_tokens(config, frames: int, height: int, width: int, kwargs: dict[str, Any]) -> VisualTokens:
    tile = tile_tokens(config)
    return VisualTokens(frames * tile.tokens, frames * tile.patches, frames * FRAME_WRAPPER_TOKENS)


def full_size_processor(processor: dict[str, Any], config) -> dict[str, Any]:
    """The tiny processor set to the full-size tile: 448 px and 256 tokens a frame."""
    size = tile_side(config)
    processor["image_seq_length"] = config.image_seq_length
    for key in ("image_processor", "video_processor"):
        processor[key]["size"] = {"height": size, "width": size}
    return processor


FAMILY = Family(
    key="internvl",
    title="InternVL3",
    model_types=("internvl",),
    presets=(Preset(MODEL_ID, "InternVL3 8B", 7.94, internvl3_8b_config),),
    model_class="InternVLForConditionalGeneration",
    tiny_tokenizer=tiny_tokenizer,
    build_tiny=build_tiny,
    image_tokens=image_tokens,
    video_tokens=video_tokens,
    image_kwargs=one_tile,
    full_size_processor=full_size_processor,
    processor_classes=("InternVLProcessor",),
    text_model_types=("qwen2",),
)

# Everything but the text tower (and so the tokenizer) is InternVL3's.
FAMILY_3_5 = dataclasses.replace(
    FAMILY,
    key="internvl3_5",
    title="InternVL3.5",
    presets=(Preset(MODEL_ID_3_5, "InternVL3.5 8B", 8.5, internvl3_5_8b_config),),
    tiny_tokenizer=tiny_tokenizer_3_5,
    build_tiny=build_tiny_3_5,
    text_model_types=("qwen3",),
)
