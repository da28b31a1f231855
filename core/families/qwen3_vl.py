"""Qwen3-VL: the family row, its published 8B architecture, its tiny model and its visual-token arithmetic.

Pictures are resized to multiples of 32 px (16 px patches merged 2x2) within a pixel budget, as Qwen2.5-VL's are
(the same image processor class). A clip differs: its budget covers the whole clip (frames x height x width), not
one frame, and the processor writes each pair of frames as "<t seconds>" + <|vision_start|> ... <|vision_end|>,
reading the times from the clip's `video_metadata`. Three DeepStack mergers feed vision features into early
language layers next to the main merger; they are projector, never LoRA-adapted or quantized.

Sources (the 8B repo itself was not reachable here): the chat template is the Qwen3-VL Instruct one found in
identical copies (a Qwen3-VL-30B-A3B-Instruct server log, a test fixture, a mirrored processor config); that the
8B repo ships the same file is UNVERIFIED. config.json values come from several published copies and match the
parameter count taken from the stored tensors (8.767 B). The processing sizes are the published
preprocessor_config.json and video_preprocessor_config.json (several copies).
"""

from __future__ import annotations

from typing import Any

from core.families.base import Family, Preset, VisualTokens, clip_metadata, published_config, token_ids
from core.families.qwen2_5_vl import QWEN_VISION_TOKENS, image_tokens, pixel_budget
from core.families.tiny_parts import (
    HALF_MEAN_STD,
    QWEN3_ADDED_TOKENS,
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

MODEL_ID = "Qwen/Qwen3-VL-8B-Instruct"
# The smallest picture the product asks the processor for: 2x2 merged 32 px patches, 4 tokens.
MIN_PIXELS = 64 * 64
# A clip's floor, for the whole clip (the published one): low enough never to upscale a real frame.
VIDEO_MIN_PIXELS = 64 * 64
# Text around each pair of frames, for the estimate only: <|vision_start|> and <|vision_end|>, plus about seven
# tokens of "<12.5 seconds>" (Qwen's tokenizer writes each digit as its own token).
GROUP_WRAPPER_TOKENS = 9

# Published processing (preprocessor_config.json, video_preprocessor_config.json), set on the tiny processor's
# copy by `full_size_processor`.
FULL_IMAGE_SIZE = {"shortest_edge": 65536, "longest_edge": 16777216}
FULL_VIDEO_SIZE = {"shortest_edge": 4096, "longest_edge": 25165824}

# Tiny: one token is 32x32 px; a picture is 2x2 to 4x4 tokens; a clip's budget covers 8 frames of 64x64 px.
TINY_PATCH = 16
TINY_MERGE = 2
TINY_IMAGE_SIZE = {"shortest_edge": 64 * 64, "longest_edge": 128 * 128}
TINY_VIDEO_SIZE = {"shortest_edge": 64 * 64, "longest_edge": 64 * 64 * 8}
# The 8B model splits its 64 rotary pairs 24/20/20 over (time, height, width), interleaved; 8 pairs here.
TINY_MROPE_SECTION = [3, 3, 2]

# Chat template of the Qwen3-VL Instruct models (see the module docstring for where it was found), verbatim.
CHAT_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0].role == 'system' %}\n"
    "        {%- if messages[0].content is string %}\n            {{- messages[0].content }}\n"
    "        {%- else %}\n            {%- for content in messages[0].content %}\n"
    "                {%- if 'text' in content %}\n                    {{- content.text }}\n"
    "                {%- endif %}\n            {%- endfor %}\n        {%- endif %}\n"
    "        {{- '\\n\\n' }}\n    {%- endif %}\n"
    "    {{- \"# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are "
    "provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n    {%- if messages[0].role == 'system' %}\n        {{- '<|im_start|>system\\n' }}\n"
    "        {%- if messages[0].content is string %}\n            {{- messages[0].content }}\n"
    "        {%- else %}\n            {%- for content in messages[0].content %}\n"
    "                {%- if 'text' in content %}\n                    {{- content.text }}\n"
    "                {%- endif %}\n            {%- endfor %}\n        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n"
    "{%- set image_count = namespace(value=0) %}\n{%- set video_count = namespace(value=0) %}\n"
    "{%- for message in messages %}\n    {%- if message.role == \"user\" %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' }}\n        {%- if message.content is string %}\n"
    "            {{- message.content }}\n        {%- else %}\n            {%- for content in message.content %}\n"
    "                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|image_pad|><|vision_end|>\n"
    "                {%- elif content.type == 'video' or 'video' in content %}\n"
    "                    {%- set video_count.value = video_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|video_pad|><|vision_end|>\n"
    "                {%- elif 'text' in content %}\n                    {{- content.text }}\n"
    "                {%- endif %}\n            {%- endfor %}\n        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' }}\n        {%- if message.content is string %}\n"
    "            {{- message.content }}\n        {%- else %}\n"
    "            {%- for content_item in message.content %}\n                {%- if 'text' in content_item %}\n"
    "                    {{- content_item.text }}\n                {%- endif %}\n            {%- endfor %}\n"
    "        {%- endif %}\n        {%- if message.tool_calls %}\n"
    "            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and message.content) or (not loop.first) %}\n"
    "                    {{- '\\n' }}\n                {%- endif %}\n                {%- if tool_call.function %}\n"
    "                    {%- set tool_call = tool_call.function %}\n                {%- endif %}\n"
    "                {{- '<tool_call>\\n{\"name\": \"' }}\n                {{- tool_call.name }}\n"
    "                {{- '\", \"arguments\": ' }}\n                {%- if tool_call.arguments is string %}\n"
    "                    {{- tool_call.arguments }}\n                {%- else %}\n"
    "                    {{- tool_call.arguments | tojson }}\n                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n            {%- endfor %}\n        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n"
    "        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {%- if message.content is string %}\n            {{- message.content }}\n        {%- else %}\n"
    "            {%- for content in message.content %}\n"
    "                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|image_pad|><|vision_end|>\n"
    "                {%- elif content.type == 'video' or 'video' in content %}\n"
    "                    {%- set video_count.value = video_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|video_pad|><|vision_end|>\n"
    "                {%- elif 'text' in content %}\n                    {{- content.text }}\n"
    "                {%- endif %}\n            {%- endfor %}\n        {%- endif %}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)

# Qwen/Qwen3-VL-8B-Instruct, config.json as published, in transformers 5's nested form (rope_theta and
# rope_scaling move into rope_parameters).
QWEN3_VL_8B = {
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_heads": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 4096,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [8, 16, 24],
        "initializer_range": 0.02,
    },
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": False,
}


def qwen3_vl_8b_config(tokenizer=None, updates: dict[str, dict[str, Any]] | None = None):
    """Qwen3-VL-8B's architecture; with `tokenizer`, its special-token ids (`core.families.base.published_config`)."""
    return published_config("Qwen3VLConfig", QWEN3_VL_8B, tokenizer, updates, QWEN_VISION_TOKENS, bos="<|endoftext|>", eos="<|im_end|>")


def tiny_tokenizer():
    return build_tokenizer(list(QWEN3_ADDED_TOKENS), CHAT_TEMPLATE, model_max_length=262144)


def build_tiny(tokenizer):
    """Return (model, processor) shaped like Qwen3-VL-8B-Instruct, but tiny."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    token_id = tokenizer.convert_tokens_to_ids
    text_config = {
        "vocab_size": padded_vocab_size(tokenizer),
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": TEXT_INTERMEDIATE,
        "num_hidden_layers": TEXT_LAYERS,
        "num_attention_heads": TEXT_HEADS,
        "num_key_value_heads": TEXT_KV_HEADS,
        "head_dim": TEXT_HIDDEN // TEXT_HEADS,
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": TINY_MROPE_SECTION,
            "mrope_interleaved": True,
        },
        "bos_token_id": token_id("<|endoftext|>"),
        "eos_token_id": token_id("<|im_end|>"),
        "pad_token_id": token_id("<|endoftext|>"),
    }
    vision_config = {
        "depth": VISION_LAYERS,
        "hidden_size": VISION_HIDDEN,
        "intermediate_size": VISION_INTERMEDIATE,
        "num_heads": VISION_HEADS,
        "hidden_act": "gelu_pytorch_tanh",
        "patch_size": TINY_PATCH,
        "spatial_merge_size": TINY_MERGE,
        "temporal_patch_size": 2,
        "out_hidden_size": TEXT_HIDDEN,
        # An 8x8 learned position grid, interpolated to the picture like the 8B model's 48x48 one.
        "num_position_embeddings": 64,
        # One DeepStack merger (the 8B model has three, after vision blocks 8, 16 and 24).
        "deepstack_visual_indexes": [0],
    }
    config = Qwen3VLConfig(
        text_config=text_config, vision_config=vision_config, **token_ids(tokenizer, QWEN_VISION_TOKENS),
        tie_word_embeddings=False,
    )
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config = generation_config(tokenizer, stop=("<|im_end|>", "<|endoftext|>"), pad="<|endoftext|>")
    return model, tiny_processor(tokenizer, CHAT_TEMPLATE)


def tiny_processor(tokenizer, chat_template: str):
    """The tiny Qwen3-VL processor (Qwen3.5 loads the same classes): one token per 32x32 px, `chat_template`."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    geometry = dict(
        patch_size=TINY_PATCH, temporal_patch_size=2, merge_size=TINY_MERGE, image_mean=HALF_MEAN_STD, image_std=HALF_MEAN_STD
    )
    image_processor = Qwen2VLImageProcessor(size=TINY_IMAGE_SIZE, **geometry)
    # Left unset, transformers warns on every clip; False is its current behaviour, and `video_kwargs` says it too.
    video_processor = Qwen3VLVideoProcessor(size=TINY_VIDEO_SIZE, cap_pixels_per_frame=False, **geometry)
    return Qwen3VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor, chat_template=chat_template,
    )


def image_kwargs(max_pixels: int) -> dict[str, Any]:
    """Each picture capped at `max_pixels`, floored at 4 tokens (Qwen2.5-VL's budget with 32 px tokens).

    >>> image_kwargs(350 * 350)
    {'size': {'shortest_edge': 4096, 'longest_edge': 122500}}
    >>> image_tokens(qwen3_vl_8b_config(), 350, 350, image_kwargs(350 * 350))  # a Kaggle wildfire tile
    VisualTokens(tokens=100, patches=400, wrapper_tokens=0)
    """
    return pixel_budget(max_pixels, MIN_PIXELS)


def video_kwargs(shapes: list[tuple[int, int, int]], timestamps: list[list[float]]) -> dict[str, Any]:
    """Frames keep their sampled size: the budget is the whole clip's, so a largest side S over F frames gives
    S x S x F. The per-frame cap is switched off by name (transformers warns when it is left unset), and each
    clip's real frame times are what the processor prints before each pair of frames.

    >>> kwargs = video_kwargs([(8, 252, 448)], [[0.25 + 0.5 * i for i in range(8)]])
    >>> kwargs["size"], kwargs["cap_pixels_per_frame"]
    ({'shortest_edge': 4096, 'longest_edge': 1605632}, False)
    """
    side = max(max(height, width) for _, height, width in shapes)
    frames = max(count for count, _, _ in shapes)
    longest = side * side * frames
    return {
        "size": {"shortest_edge": min(VIDEO_MIN_PIXELS, longest), "longest_edge": longest},
        "cap_pixels_per_frame": False,
        "video_metadata": [clip_metadata(times) for times in timestamps],
    }


def video_tokens(config, frames: int, height: int, width: int, kwargs: dict[str, Any]) -> VisualTokens:
    """Tokens and patches of a clip, by the video processor's own `smart_resize` (the budget spread over every
    frame); frames are patched in pairs (the last one repeated for an odd count).

    >>> video_tokens(qwen3_vl_8b_config(), 8, 252, 448, video_kwargs([(8, 252, 448)], [[0.5 * i for i in range(8)]]))
    VisualTokens(tokens=448, patches=1792, wrapper_tokens=36)
    """
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    vision = config.vision_config
    patch, merge, temporal = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
    size = kwargs["size"]
    h, w = smart_resize(
        frames, height, width, temporal_factor=temporal, factor=patch * merge,
        min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"],
    )
    steps = -(-frames // temporal)
    patches = steps * (h // patch) * (w // patch)
    return VisualTokens(patches // (merge * merge), patches, steps * GROUP_WRAPPER_TOKENS)


def full_size_processor(processor: dict[str, Any], config) -> dict[str, Any]:
    """The tiny processor set to the published pixel budgets (the patch geometry is already the 8B model's)."""
    processor["image_processor"]["size"] = dict(FULL_IMAGE_SIZE)
    processor["video_processor"]["size"] = dict(FULL_VIDEO_SIZE)
    return processor


FAMILY = Family(
    key="qwen3_vl",
    title="Qwen3-VL",
    model_types=("qwen3_vl",),
    presets=(Preset(MODEL_ID, "Qwen3-VL 8B Instruct", 8.77, qwen3_vl_8b_config),),
    model_class="Qwen3VLForConditionalGeneration",
    tiny_tokenizer=tiny_tokenizer,
    build_tiny=build_tiny,
    # Same image processor as Qwen2.5-VL: the arithmetic reads patch and merge sizes from the config.
    image_tokens=image_tokens,
    video_tokens=video_tokens,
    image_kwargs=image_kwargs,
    video_kwargs=video_kwargs,
    processor_classes=("Qwen3VLProcessor",),
    projector_parts=("merger", "deepstack_merger_list"),
    full_size_processor=full_size_processor,
)
