"""Gemma 3: the family row, its published 4B architecture, its tiny model and its visual-token arithmetic.

Every picture is squashed to one 896 px square (aspect not kept; pan-and-scan crops stay off), 14 px patches
average-pooled to a fixed 256 tokens, written as "\\n\\n<start_of_image>" + tokens + "<end_of_image>\\n\\n". The
model takes no video. The chat template has no system turn (it puts the system text at the top of the first user
turn) and renders `<bos>` itself, while the tokenizer adds one too (`add_bos_token`, as the real one does): prompts
are tokenised with `add_special_tokens=False` (`core.generation.build_inputs`). In training, the model reads
which tokens are the picture's from the processor's `token_type_ids`.

Sources (the gated repo was not reachable here): the chat template is the Gemma 3 "-it" one, in many identical
copies (transformers' Gemma 3 processor tests among them); that google/gemma-3-4b-it's file is identical is
UNVERIFIED. config.json: the published file names few keys (text 2560/10240/34 layers, linear rope scaling x8,
sliding window 1024, SigLIP 896 px / 14 px patches, 256 tokens a picture, special-token ids); transformers'
Gemma 3 defaults give the rest, and the total matches the published 4.3 B. Processing: 896 px, mean and std 0.5,
pan-and-scan unset (the processor's default, off).
"""

from __future__ import annotations

from typing import Any

from core.families.base import Family, Preset, VisualTokens, published_config, token_ids
from core.families.tiny_parts import (
    HALF_MEAN_STD,
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

MODEL_ID = "google/gemma-3-4b-it"
# "\n\n", "<end_of_image>" and "\n\n" the processor writes around a picture's tokens, beside the template's
# <start_of_image>.
IMAGE_WRAPPER_TOKENS = 3

# Gemma's specials in the real id order: <pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4, <start_of_turn> 105,
# <end_of_turn> 106, <start_of_image> 255999, <end_of_image> 256000, <image_soft_token> 262144.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<pad>", True),
    ("<eos>", True),
    ("<bos>", True),
    ("<unk>", True),
    ("<mask>", True),
    ("<start_of_turn>", True),
    ("<end_of_turn>", True),
    ("<start_of_image>", True),
    ("<end_of_image>", True),
    ("<image_soft_token>", True),
)
# Gemma3Processor reads these from the tokenizer (tokenizer.boi_token, ...).
NAMED_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}

# Tiny: a 56 px square, 4x4 patches of 14 px pooled to 2x2: 4 tokens a picture.
TINY_IMAGE_SIZE = 56
TINY_PATCH = 14
TINY_TOKENS_PER_IMAGE = 4
# The 4B model alternates five sliding-window layers with one global one; two layers keep one of each.
TINY_LAYER_TYPES = ["sliding_attention", "full_attention"]
TINY_SLIDING_WINDOW = 64
ROPE_PARAMETERS = {
    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
}

# Chat template of the Gemma 3 "-it" models (see the module docstring for where it was found), verbatim. It renders
# {{ bos_token }} itself.
CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

# google/gemma-3-4b-it, config.json as published (with transformers' Gemma 3 defaults written out: 8 heads, 4
# key-value heads, head_dim 256, vocab 262208, tied embeddings), in transformers 5's form.
GEMMA3_4B = {
    "text_config": {
        "model_type": "gemma3_text",
        "vocab_size": 262208,
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "num_hidden_layers": 34,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "sliding_window": 1024,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 131072,
        "rope_parameters": ROPE_PARAMETERS,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "image_size": 896,
        "patch_size": 14,
        "vision_use_head": False,
    },
    "mm_tokens_per_image": 256,
    "boi_token_index": 255999,
    "eoi_token_index": 256000,
    "image_token_index": 262144,
    "eos_token_id": [1, 106],
    "tie_word_embeddings": True,
}


def gemma3_4b_config(tokenizer=None, updates: dict[str, dict[str, Any]] | None = None):
    """Gemma-3-4B's architecture; with `tokenizer`, its special-token ids (`core.families.base.published_config`),
    and generation stopping at either `<eos>` or `<end_of_turn>`, as the published config does."""
    tokens = {"boi_token_index": "<start_of_image>", "eoi_token_index": "<end_of_image>", "image_token_index": "<image_soft_token>"}
    config = published_config("Gemma3Config", GEMMA3_4B, tokenizer, updates, tokens, bos="<bos>", eos="<eos>", pad="<pad>")
    if tokenizer is not None:
        config.eos_token_id = list(token_ids(tokenizer, {"eos": "<eos>", "end_of_turn": "<end_of_turn>"}).values())
    return config


def tiny_tokenizer():
    return build_tokenizer(
        list(ADDED_TOKENS),
        CHAT_TEMPLATE,
        model_max_length=131072,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        add_bos_token=True,
        extra_special_tokens=dict(NAMED_TOKENS),
    )


def build_tiny(tokenizer):
    """Return (model, processor) shaped like gemma-3-4b-it, but tiny."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    token_id = tokenizer.convert_tokens_to_ids
    head_dim = TEXT_HIDDEN // TEXT_HEADS
    config = Gemma3Config(
        text_config={
            "model_type": "gemma3_text",
            "vocab_size": padded_vocab_size(tokenizer),
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": TEXT_INTERMEDIATE,
            "num_hidden_layers": TEXT_LAYERS,
            "num_attention_heads": TEXT_HEADS,
            "num_key_value_heads": TEXT_KV_HEADS,
            "head_dim": head_dim,
            "query_pre_attn_scalar": head_dim,
            "sliding_window": TINY_SLIDING_WINDOW,
            "layer_types": TINY_LAYER_TYPES,
            "max_position_embeddings": 131072,
            "rope_parameters": ROPE_PARAMETERS,
            "bos_token_id": token_id("<bos>"),
            "eos_token_id": token_id("<eos>"),
            "pad_token_id": token_id("<pad>"),
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": VISION_INTERMEDIATE,
            "num_hidden_layers": VISION_LAYERS,
            "num_attention_heads": VISION_HEADS,
            "image_size": TINY_IMAGE_SIZE,
            "patch_size": TINY_PATCH,
            "vision_use_head": False,
        },
        mm_tokens_per_image=TINY_TOKENS_PER_IMAGE,
        boi_token_index=token_id("<start_of_image>"),
        eoi_token_index=token_id("<end_of_image>"),
        image_token_index=token_id("<image_soft_token>"),
        eos_token_id=[token_id("<eos>"), token_id("<end_of_turn>")],
        tie_word_embeddings=True,
    )
    model = Gemma3ForConditionalGeneration(config)
    image_processor = Gemma3ImageProcessor(
        size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}, image_mean=HALF_MEAN_STD, image_std=HALF_MEAN_STD
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        image_seq_length=TINY_TOKENS_PER_IMAGE,
    )
    model.generation_config = generation_config(tokenizer, stop=("<eos>", "<end_of_turn>"), pad="<pad>", bos="<bos>")
    return model, processor


def one_view(max_pixels: int) -> dict[str, Any]:
    """One view per picture, whatever its size: pan-and-scan crops would multiply a wide picture's tokens."""
    return {"do_pan_and_scan": False}


def image_tokens(config, height: int, width: int, image_kwargs: dict[str, Any]) -> VisualTokens:
    """Tokens and patches of one picture: a fixed count.

    >>> image_tokens(gemma3_4b_config(), 350, 350, one_view(350 * 350))
    VisualTokens(tokens=256, patches=4096, wrapper_tokens=3)
    """
    vision = config.vision_config
    return VisualTokens(config.mm_tokens_per_image, (vision.image_size // vision.patch_size) ** 2, IMAGE_WRAPPER_TOKENS)


def full_size_processor(processor: dict[str, Any], config) -> dict[str, Any]:
    """The tiny processor set to the published 896 px square and 256 tokens a picture."""
    side = config.vision_config.image_size
    processor["image_seq_length"] = config.mm_tokens_per_image
    processor["image_processor"]["size"] = {"height": side, "width": side}
    return processor


FAMILY = Family(
    key="gemma3",
    title="Gemma 3",
    model_types=("gemma3",),
    presets=(Preset(MODEL_ID, "Gemma 3 4B it", 4.3, gemma3_4b_config, gated=True),),
    model_class="Gemma3ForConditionalGeneration",
    tiny_tokenizer=tiny_tokenizer,
    build_tiny=build_tiny,
    image_tokens=image_tokens,
    video_tokens=None,
    image_kwargs=one_view,
    processor_classes=("Gemma3Processor",),
    system_role=False,
    full_size_processor=full_size_processor,
)
