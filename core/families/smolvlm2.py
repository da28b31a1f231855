"""SmolVLM2: the family row, its published 2.2B architecture, its tiny model and its visual-token arithmetic.

A picture's longest edge is scaled to the processor's `size` (up or down), both sides are rounded up to whole
384 px tiles, and a picture larger than one tile is split into them plus one global tile: 81 tokens a tile
(14 px patches, pixel-shuffled by 3). A clip's frames are one tile each, written as "Frame from MM:SS:" with the
frame's time, after a line giving the frame count in words (hence the `num2words` dependency) and the clip's
length. The processor swaps in its own template (the same text with a video branch) when a turn holds a video.

Sources: the chat template is the one transformers' SmolVLM processor tests carry for the SmolVLM2 hub processors,
also byte-checked in a port of a SmolVLM checkpoint; that the 2.2B repo's chat_template.json is identical is
UNVERIFIED. config.json values come from a port of SmolVLM2-2.2B (SmolLM2-1.7B text tower, SigLIP so400m vision
tower, scale factor 3) and match the published 2.25 B parameters. The processing sizes (1536 px images, 384 px
tiles and frames, at most 64 frames at 1 fps) come from a port's constants: the repo's preprocessor_config.json was
not found, so they are UNVERIFIED.
"""

from __future__ import annotations

import math
from typing import Any

from core.families.base import Family, Preset, VisualTokens, clip_metadata, published_config
from core.families.tiny_parts import (
    HALF_MEAN_STD,
    TEXT_HEADS,
    TEXT_HIDDEN,
    TEXT_INTERMEDIATE,
    TEXT_LAYERS,
    VISION_HEADS,
    VISION_HIDDEN,
    VISION_INTERMEDIATE,
    VISION_LAYERS,
    build_tokenizer,
    generation_config,
    padded_vocab_size,
)

MODEL_ID = "HuggingFaceTB/SmolVLM2-2.2B-Instruct"

# The side of a tile in pixels: the vision tower's input. The tiny model keeps it (with larger patches), because
# `image_kwargs` sees only a pixel budget, never the model, and must speak in the tile of both.
TILE = 384
# The tokenizer names grid tiles up to <row_6_col_6>: a larger grid would write them as plain text.
MAX_TILES_PER_SIDE = 6
# Published processing: pictures scaled to a 1536 px longest edge (4 x 4 tiles), frames to one tile, 64 frames at
# most, sampled at 1 fps (UNVERIFIED, see the module docstring).
FULL_IMAGE_LONGEST_EDGE = 4 * TILE
VIDEO_SAMPLING = {"fps": 1, "max_frames": 64, "video_size": {"longest_edge": TILE}}
# Text around the visual tokens, for the estimate only (approximate: SmolLM2's tokenizer is not available here).
# A tile: <fake_token_around_image><row_r_col_c>, a newline per grid row, then "\n" and
# <fake_token_around_image><global-img> ... <fake_token_around_image> around the global tile.
# A frame: "\nFrame from 00:03:" (about ten tokens) and the same three around its tile. A clip: the line
# "You are provided the following series of eight frames from a 0:00:04 [H:MM:SS] video.\n" and "\n\n".
FRAME_WRAPPER_TOKENS = 13
CLIP_WRAPPER_TOKENS = 32

# SmolLM2's specials (ids 0..2), then the Idefics3 image tokens in the real order: <global-img>, the 36
# <row_r_col_c> of a 6x6 grid, <fake_token_around_image>, <image>, and <end_of_utterance>.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<global-img>", True),
    *((f"<row_{row}_col_{col}>", True) for row in range(1, 7) for col in range(1, 7)),
    ("<fake_token_around_image>", True),
    ("<image>", True),
    ("<end_of_utterance>", True),
)

# Tiny: the published 384 px tile cut into 64 px patches (6 x 6) and pixel-shuffled by the published factor 3,
# so a tile is 4 tokens; pictures are scaled to 2 x 2 tiles by default.
TINY_PATCH = 64
TINY_SCALE_FACTOR = 3
TINY_IMAGE_LONGEST_EDGE = 2 * TILE

# Chat template of the SmolVLM2 hub processors (see the module docstring for where it was found), verbatim. It has no
# video branch: SmolVLMProcessor.apply_chat_template uses its own DEFAULT_CHAT_TEMPLATE for a turn with a video.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == "
    "'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}"
    "{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# HuggingFaceTB/SmolVLM2-2.2B-Instruct, config.json (see the module docstring), in transformers 5's form.
SMOLVLM2_2_2B = {
    "text_config": {
        "model_type": "llama",
        "vocab_size": 49280,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "head_dim": 64,
        "hidden_act": "silu",
        "max_position_embeddings": 16384,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 273768.0},
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 49279,
        "pad_token_id": 2,
    },
    "vision_config": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "image_size": TILE,
        "patch_size": 14,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    },
    "image_token_id": 49190,
    "scale_factor": 3,
    "tie_word_embeddings": False,
}


def smolvlm2_2b_config(tokenizer=None, updates: dict[str, dict[str, Any]] | None = None):
    """SmolVLM2-2.2B's architecture; with `tokenizer`, its special-token ids (`core.families.base.published_config`)."""
    return published_config("SmolVLMConfig", SMOLVLM2_2_2B, tokenizer, updates, {"image_token_id": "<image>"},
                            bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>")


def tiny_tokenizer():
    return build_tokenizer(
        list(ADDED_TOKENS),
        CHAT_TEMPLATE,
        model_max_length=16384,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
    )


def tokens_per_tile(config) -> int:
    """<image> tokens of one tile: its patches after the connector's pixel shuffle.

    >>> tokens_per_tile(smolvlm2_2b_config())
    81
    """
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2


def build_processor(tokenizer, config, image_longest_edge: int):
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    tile = {"longest_edge": TILE}
    image_processor = SmolVLMImageProcessor(
        size={"longest_edge": image_longest_edge},
        max_image_size=tile,
        do_image_splitting=True,
        image_mean=HALF_MEAN_STD,
        image_std=HALF_MEAN_STD,
    )
    video_processor = SmolVLMVideoProcessor(
        size=tile, max_image_size=tile, image_mean=HALF_MEAN_STD, image_std=HALF_MEAN_STD, video_sampling=VIDEO_SAMPLING
    )
    return SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_len=tokens_per_tile(config),
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny(tokenizer):
    """Return (model, processor) shaped like SmolVLM2-2.2B-Instruct, but tiny."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    token_id = tokenizer.convert_tokens_to_ids
    config = SmolVLMConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": padded_vocab_size(tokenizer),
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": TEXT_INTERMEDIATE,
            "num_hidden_layers": TEXT_LAYERS,
            "num_attention_heads": TEXT_HEADS,
            "num_key_value_heads": TEXT_HEADS,  # the 2.2B model has as many key-value heads as heads
            "head_dim": TEXT_HIDDEN // TEXT_HEADS,
            "max_position_embeddings": 16384,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 273768.0},
            "tie_word_embeddings": False,
            "bos_token_id": token_id("<|im_start|>"),
            "eos_token_id": token_id("<end_of_utterance>"),
            "pad_token_id": token_id("<|im_end|>"),
        },
        vision_config={
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": VISION_INTERMEDIATE,
            "num_hidden_layers": VISION_LAYERS,
            "num_attention_heads": VISION_HEADS,
            "image_size": TILE,
            "patch_size": TINY_PATCH,
        },
        image_token_id=token_id("<image>"),
        scale_factor=TINY_SCALE_FACTOR,
        tie_word_embeddings=False,
    )
    model = SmolVLMForConditionalGeneration(config)
    model.generation_config = generation_config(tokenizer, stop=("<end_of_utterance>",), pad="<|im_end|>", bos="<|im_start|>")
    return model, build_processor(tokenizer, config, TINY_IMAGE_LONGEST_EDGE)


def image_kwargs(max_pixels: int) -> dict[str, Any]:
    """The longest edge a picture is scaled to, in SmolVLM's terms: the most whole tiles a side that fit in the
    budget's side (at least one, at most six). The split grid then covers at most `max_pixels`, so the tokens
    follow the budget: under a 768 px side every picture is one tile (81 tokens at full size); above it, rows x
    columns tiles and a global one (a 640x360 picture at a 1000 px side: 2 x 2 + 1 tiles).

    >>> image_kwargs(350 * 350), image_kwargs(1000 * 1000)
    ({'size': {'longest_edge': 384}}, {'size': {'longest_edge': 768}})
    >>> image_tokens(smolvlm2_2b_config(), 360, 640, image_kwargs(1000 * 1000))
    VisualTokens(tokens=405, patches=3645, wrapper_tokens=14)
    """
    tiles = min(MAX_TILES_PER_SIDE, max(1, math.isqrt(max_pixels) // TILE))
    return {"size": {"longest_edge": tiles * TILE}}


def tile_grid(height: int, width: int, longest_edge: int, tile: int) -> tuple[int, int]:
    """(rows, columns) the image processor splits a picture into; (0, 0) when it stays one tile. Its own steps:
    scale the longest edge to `longest_edge` (its helpers), round both sides up to whole tiles, split when larger
    than one."""
    from transformers.models.smolvlm.image_processing_smolvlm import (
        MAX_IMAGE_SIZE,
        _resize_output_size_rescale_to_max_len,
        _resize_output_size_scale_below_upper_bound,
    )

    height, width = _resize_output_size_rescale_to_max_len(height, width, max_len=longest_edge)
    height, width = _resize_output_size_scale_below_upper_bound(height, width, max_len=MAX_IMAGE_SIZE)
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    if height > tile or width > tile:
        return math.ceil(height / tile), math.ceil(width / tile)
    return 0, 0


def image_tokens(config, height: int, width: int, image_kwargs: dict[str, Any]) -> VisualTokens:
    """Tokens and patches of one picture: every grid tile and the global one."""
    tile, patch = config.vision_config.image_size, config.vision_config.patch_size
    rows, cols = tile_grid(height, width, image_kwargs["size"]["longest_edge"], tile)
    tiles = rows * cols + 1
    wrapper = 3 + (2 * rows * cols + rows + 1 if rows else 0)
    return VisualTokens(tiles * tokens_per_tile(config), tiles * (tile // patch) ** 2, wrapper)


def video_kwargs(shapes: list[tuple[int, int, int]], timestamps: list[list[float]]) -> dict[str, Any]:
    """Each clip's frame times, printed before each frame; its length is the sampled window's (else the processor
    prints the last frame's time as the length). Frames are one tile whatever their size.

    >>> video_kwargs([(4, 252, 448)], [[0.5, 1.5, 2.5, 3.5]])["video_metadata"][0]["duration"]
    4.0
    """
    metadata = [clip_metadata(times) for times in timestamps]
    return {"video_metadata": [{**clip, "duration": clip["total_num_frames"] / clip["fps"]} for clip in metadata]}


def video_tokens(config, frames: int, height: int, width: int, kwargs: dict[str, Any]) -> VisualTokens:
    """Tokens and patches of a clip: one tile a frame.

    >>> video_tokens(smolvlm2_2b_config(), 8, 252, 448, video_kwargs([(8, 252, 448)], [[0.5 * i for i in range(8)]]))
    VisualTokens(tokens=648, patches=5832, wrapper_tokens=136)
    """
    vision = config.vision_config
    return VisualTokens(
        frames * tokens_per_tile(config),
        frames * (vision.image_size // vision.patch_size) ** 2,
        frames * FRAME_WRAPPER_TOKENS + CLIP_WRAPPER_TOKENS,
    )


def full_size_processor(processor: dict[str, Any], config) -> dict[str, Any]:
    """The tiny processor set to the published picture size and to 81 tokens a tile (the tile is already 384 px)."""
    processor["image_seq_len"] = tokens_per_tile(config)
    processor["image_processor"]["size"] = {"longest_edge": FULL_IMAGE_LONGEST_EDGE}
    return processor


FAMILY = Family(
    key="smolvlm2",
    title="SmolVLM2",
    model_types=("smolvlm",),
    presets=(Preset(MODEL_ID, "SmolVLM2 2.2B Instruct", 2.25, smolvlm2_2b_config),),
    model_class="SmolVLMForConditionalGeneration",
    tiny_tokenizer=tiny_tokenizer,
    build_tiny=build_tiny,
    image_tokens=image_tokens,
    video_tokens=video_tokens,
    image_kwargs=image_kwargs,
    video_kwargs=video_kwargs,
    processor_classes=("SmolVLMProcessor",),
    full_size_processor=full_size_processor,
)
