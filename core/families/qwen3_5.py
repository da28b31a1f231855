"""Qwen3.5: the family row, its published 9B and 2B architectures, its tiny model and its visual-token arithmetic.

Qwen3.5 is natively multimodal (there is no separate -VL model). Its language model is hybrid: three Gated
DeltaNet (linear-attention) layers, then one gated full-attention layer, repeated (`text_config.layer_types`).
The vision tower and the processing are Qwen3-VL's without DeepStack: the same processor classes
(`Qwen3VLProcessor`, `Qwen2VLImageProcessor`, `Qwen3VLVideoProcessor` in transformers 5.23's Auto mappings), so
pictures become 32 px tokens within a pixel budget and a clip's budget covers the whole clip, each pair of frames
stamped "<t seconds>". The visual-token arithmetic and the processor kwargs are therefore Qwen3-VL's own functions.

The linear-attention blocks (`linear_attn`: `in_proj_qkv`, `in_proj_z`, `in_proj_b`, `in_proj_a`, `out_proj`) are
attention for the LoRA toggles. For QLoRA the row names no extra keep-out: the keep-out list is the vision tower
and the merger, so the Gated DeltaNet projections go to 4-bit with the rest of the language model, while their
per-head parameters (`A_log`, `dt_bias`), the gated norm and the depthwise `conv1d` are not Linear layers and stay
in high precision. The published 4-bit releases found (NVIDIA's modelopt NVFP4 and a compressed-tensors NVFP4 of
Qwen3.5-122B-A10B) keep every `linear_attn` projection in bf16; doing the same here needs a keep-out field beside
`projector_parts` that is not also "never LoRA-adapted", which `Family` does not have yet.

Sources (the hub itself was not reachable here):
- Qwen/Qwen3.5-9B config.json: a `curl` of https://huggingface.co/Qwen/Qwen3.5-9B/resolve/main/config.json
  recorded in a public agent log (text_config up to layer_types), and an Unsloth copy of the whole file
  ("unsloth_fixed"); both agree. Its model.safetensors.index.json gives total_size 19,306,216,416 bytes of bf16
  = 9.653 B stored parameters, which include a one-layer multi-token-prediction head (`mtp_num_hidden_layers: 1`,
  ~0.243 B: fc 8192->4096, a gated attention layer and a 12288-wide MLP) that transformers does not build; the
  published total below is the stored count less that head (9.410 B), what the meta-device model must match.
  The model card says "Number of Parameters: 9B".
- Qwen/Qwen3.5-2B: text_config from a public test fixture of its config.json (hidden 2048, 24 layers, 8/2 heads of
  256, FFN 6144, 16/16 linear heads of 128, tied embeddings), vision from a public registry of the Qwen3.5 sizes
  (depth 24, width 1024, FFN 4096, 16 heads, out 2048); rope and token ids as the 9B's. Its published total is
  UNVERIFIED: no stored-tensor total was found, so the figure below is the meta-device count of these values
  (2.213 B, its MTP head left out as for the 9B); the card says "2B".
- The chat template is the Qwen3.5 one copied from Qwen/Qwen3.5-27B's tokenizer_config.json in a public repo; its
  SHA-256 (a4aee8af...28f715) equals the one another repo records for mlx-community/Qwen3.5-35B-A3B's
  chat_template.jinja. That the 9B ships the same file is UNVERIFIED; its card says it thinks by default, as this
  template does. The 0.8B and 2B ship a variant that thinks only when asked (`enable_thinking is true`); both
  write the same empty think block when `enable_thinking=False`, which is how the product renders every prompt.
- Token ids: <|endoftext|> 248044, <|im_start|> 248045, <|im_end|> 248046, <|vision_start|> 248053 ...
  <|video_pad|> 248057, <think> 248068 (config.json, a llama.cpp load log, a logit trace): Qwen3's added tokens in
  Qwen3's order from 248044, as `QWEN3_ADDED_TOKENS` has them. Later added tokens of the real tokenizer are left
  out of the tiny one.
- Image and video processing sizes: UNVERIFIED, taken as Qwen3-VL's published ones (same classes, same patch
  geometry in config.json).
"""

from __future__ import annotations

from typing import Any

from core.families.base import ATTENTION_PARTS, Family, Preset, published_config, token_ids
from core.families.qwen2_5_vl import QWEN_VISION_TOKENS, image_tokens
from core.families.qwen3_vl import (
    TINY_MERGE,
    TINY_PATCH,
    full_size_processor,
    image_kwargs,
    tiny_processor,
    video_kwargs,
    video_tokens,
)
from core.families.tiny_parts import (
    QWEN3_ADDED_TOKENS,
    TEXT_HEADS,
    TEXT_HIDDEN,
    TEXT_INTERMEDIATE,
    TEXT_KV_HEADS,
    VISION_HEADS,
    VISION_HIDDEN,
    VISION_INTERMEDIATE,
    VISION_LAYERS,
    build_tokenizer,
    generation_config,
    padded_vocab_size,
)

MODEL_ID = "Qwen/Qwen3.5-9B"
SMALL_MODEL_ID = "Qwen/Qwen3.5-2B"
# The layer pattern of every Qwen3.5 size: three Gated DeltaNet layers, then one gated full-attention layer.
LAYER_PATTERN = ["linear_attention", "linear_attention", "linear_attention", "full_attention"]

# Tiny: one token is 32x32 px, as in qwen3_vl's tiny model (its processor, `tiny_processor`). Two text layers keep
# the hybrid: one linear-attention layer, then one full-attention layer.
TINY_LAYER_TYPES = ["linear_attention", "full_attention"]
# Full attention: 4 heads of 32, a quarter of each rotated (the 9B rotates 64 of 256) = 4 pairs over (t, h, w).
TINY_HEAD_DIM = 32
TINY_MROPE_SECTION = [2, 1, 1]

# Chat template of the Qwen3.5 models that think by default (see the module docstring), verbatim.
CHAT_TEMPLATE = (
    '{%- set image_count = namespace(value=0) %}\n'
    '{%- set video_count = namespace(value=0) %}\n'
    '{%- macro render_content(content, do_vision_count, is_system_content=false) %}\n'
    '    {%- if content is string %}\n'
    '        {{- content }}\n'
    '    {%- elif content is iterable and content is not mapping %}\n'
    '        {%- for item in content %}\n'
    "            {%- if 'image' in item or 'image_url' in item or item.type == 'image' %}\n"
    '                {%- if is_system_content %}\n'
    "                    {{- raise_exception('System message cannot contain images.') }}\n"
    '                {%- endif %}\n'
    '                {%- if do_vision_count %}\n'
    '                    {%- set image_count.value = image_count.value + 1 %}\n'
    '                {%- endif %}\n'
    '                {%- if add_vision_id %}\n'
    "                    {{- 'Picture ' ~ image_count.value ~ ': ' }}\n"
    '                {%- endif %}\n'
    "                {{- '<|vision_start|><|image_pad|><|vision_end|>' }}\n"
    "            {%- elif 'video' in item or item.type == 'video' %}\n"
    '                {%- if is_system_content %}\n'
    "                    {{- raise_exception('System message cannot contain videos.') }}\n"
    '                {%- endif %}\n'
    '                {%- if do_vision_count %}\n'
    '                    {%- set video_count.value = video_count.value + 1 %}\n'
    '                {%- endif %}\n'
    '                {%- if add_vision_id %}\n'
    "                    {{- 'Video ' ~ video_count.value ~ ': ' }}\n"
    '                {%- endif %}\n'
    "                {{- '<|vision_start|><|video_pad|><|vision_end|>' }}\n"
    "            {%- elif 'text' in item %}\n"
    '                {{- item.text }}\n'
    '            {%- else %}\n'
    "                {{- raise_exception('Unexpected item type in content.') }}\n"
    '            {%- endif %}\n'
    '        {%- endfor %}\n'
    '    {%- elif content is none or content is undefined %}\n'
    "        {{- '' }}\n"
    '    {%- else %}\n'
    "        {{- raise_exception('Unexpected content type.') }}\n"
    '    {%- endif %}\n'
    '{%- endmacro %}\n'
    '{%- if not messages %}\n'
    "    {{- raise_exception('No messages provided.') }}\n"
    '{%- endif %}\n'
    '{%- if tools and tools is iterable and tools is not mapping %}\n'
    "    {{- '<|im_start|>system\\n' }}\n"
    '    {{- "# Tools\\n\\nYou have access to the following functions:\\n\\n<tools>" }}\n'
    '    {%- for tool in tools %}\n'
    '        {{- "\\n" }}\n'
    '        {{- tool | tojson }}\n'
    '    {%- endfor %}\n'
    '    {{- "\\n</tools>" }}\n'
    "    {{- '\\n\\nIf you choose to call a function ONLY reply in the following format with NO suffix"
    ':\\n\\n<tool_call>\\n<function=example_function_name>\\n<parameter=example_parameter_1>\\nvalue_1\\n<'
    '/parameter>\\n<parameter=example_parameter_2>\\nThis is the value for the second parameter\\nthat '
    'can span\\nmultiple lines\\n</parameter>\\n</function>\\n</tool_call>\\n\\n<IMPORTANT>\\nReminder:\\n- '
    'Function calls MUST follow the specified format: an inner <function=...></function> block must '
    'be nested within <tool_call></tool_call> XML tags\\n- Required parameters MUST be specified\\n- Y'
    'ou may provide optional reasoning for your function call in natural language BEFORE the functio'
    'n call, but NOT after\\n- If there is no function call available, answer the question like norma'
    "l with your current knowledge and do not tell the user about function calls\\n</IMPORTANT>' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    '        {%- set content = render_content(messages[0].content, false, true)|trim %}\n'
    '        {%- if content %}\n'
    "            {{- '\\n\\n' + content }}\n"
    '        {%- endif %}\n'
    '    {%- endif %}\n'
    "    {{- '<|im_end|>\\n' }}\n"
    '{%- else %}\n'
    "    {%- if messages[0].role == 'system' %}\n"
    '        {%- set content = render_content(messages[0].content, false, true)|trim %}\n'
    "        {{- '<|im_start|>system\\n' + content + '<|im_end|>\\n' }}\n"
    '    {%- endif %}\n'
    '{%- endif %}\n'
    '{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n'
    '{%- for message in messages[::-1] %}\n'
    '    {%- set index = (messages|length - 1) - loop.index0 %}\n'
    '    {%- if ns.multi_step_tool and message.role == "user" %}\n'
    '        {%- set content = render_content(message.content, false)|trim %}\n'
    "        {%- if not(content.startswith('<tool_response>') and content.endswith('</tool_response>')) %}\n"
    '            {%- set ns.multi_step_tool = false %}\n'
    '            {%- set ns.last_query_index = index %}\n'
    '        {%- endif %}\n'
    '    {%- endif %}\n'
    '{%- endfor %}\n'
    '{%- if ns.multi_step_tool %}\n'
    "    {{- raise_exception('No user query found in messages.') }}\n"
    '{%- endif %}\n'
    '{%- for message in messages %}\n'
    '    {%- set content = render_content(message.content, true)|trim %}\n'
    '    {%- if message.role == "system" %}\n'
    '        {%- if not loop.first %}\n'
    "            {{- raise_exception('System message must be at the beginning.') }}\n"
    '        {%- endif %}\n'
    '    {%- elif message.role == "user" %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {%- set reasoning_content = '' %}\n"
    '        {%- if message.reasoning_content is string %}\n'
    '            {%- set reasoning_content = message.reasoning_content %}\n'
    '        {%- else %}\n'
    "            {%- if '</think>' in content %}\n"
    "                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<t"
    "hink>')[-1].lstrip('\\n') %}\n"
    "                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n"
    '            {%- endif %}\n'
    '        {%- endif %}\n'
    '        {%- set reasoning_content = reasoning_content|trim %}\n'
    '        {%- if loop.index0 > ns.last_query_index %}\n'
    "            {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content + '\\n</think>"
    "\\n\\n' + content }}\n"
    '        {%- else %}\n'
    "            {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    '        {%- endif %}\n'
    '        {%- if message.tool_calls and message.tool_calls is iterable and message.tool_calls is '
    'not mapping %}\n'
    '            {%- for tool_call in message.tool_calls %}\n'
    '                {%- if tool_call.function is defined %}\n'
    '                    {%- set tool_call = tool_call.function %}\n'
    '                {%- endif %}\n'
    '                {%- if loop.first %}\n'
    '                    {%- if content|trim %}\n'
    "                        {{- '\\n\\n<tool_call>\\n<function=' + tool_call.name + '>\\n' }}\n"
    '                    {%- else %}\n'
    "                        {{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}\n"
    '                    {%- endif %}\n'
    '                {%- else %}\n'
    "                    {{- '\\n<tool_call>\\n<function=' + tool_call.name + '>\\n' }}\n"
    '                {%- endif %}\n'
    '                {%- if tool_call.arguments is defined %}\n'
    '                    {%- for args_name, args_value in tool_call.arguments|items %}\n'
    "                        {{- '<parameter=' + args_name + '>\\n' }}\n"
    '                        {%- set args_value = args_value | tojson | safe if args_value is mappin'
    'g or (args_value is sequence and args_value is not string) else args_value | string %}\n'
    '                        {{- args_value }}\n'
    "                        {{- '\\n</parameter>\\n' }}\n"
    '                    {%- endfor %}\n'
    '                {%- endif %}\n'
    "                {{- '</function>\\n</tool_call>' }}\n"
    '            {%- endfor %}\n'
    '        {%- endif %}\n'
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if loop.previtem and loop.previtem.role != "tool" %}\n'
    "            {{- '<|im_start|>user' }}\n"
    '        {%- endif %}\n'
    "        {{- '\\n<tool_response>\\n' }}\n"
    '        {{- content }}\n'
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if not loop.last and loop.nextitem.role != "tool" %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    '        {%- elif loop.last %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    '        {%- endif %}\n'
    '    {%- else %}\n'
    "        {{- raise_exception('Unexpected message role.') }}\n"
    '    {%- endif %}\n'
    '{%- endfor %}\n'
    '{%- if add_generation_prompt %}\n'
    "    {{- '<|im_start|>assistant\\n' }}\n"
    '    {%- if enable_thinking is defined and enable_thinking is false %}\n'
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    '    {%- else %}\n'
    "        {{- '<think>\\n' }}\n"
    '    {%- endif %}\n'
    '{%- endif %}'
)

# Rotary settings of every Qwen3.5 size: a quarter of each 256-wide head rotated, 32 pairs split 11/11/10 over
# (time, height, width), interleaved.
ROPE = {
    "rope_type": "default",
    "rope_theta": 10000000.0,
    "mrope_section": [11, 11, 10],
    "mrope_interleaved": True,
    "partial_rotary_factor": 0.25,
}

# Qwen/Qwen3.5-9B, config.json as published (keys transformers 5.23 reads; `full_attention_interval: 4` written
# out as `layer_types`).
QWEN3_5_9B = {
    "text_config": {
        "vocab_size": 248320,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 32,
        "layer_types": LAYER_PATTERN * 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 128,
        "linear_value_head_dim": 128,
        "linear_num_key_heads": 16,
        "linear_num_value_heads": 32,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "rope_parameters": ROPE,
        "tie_word_embeddings": False,
        "eos_token_id": 248044,
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
        "initializer_range": 0.02,
    },
    "image_token_id": 248056,
    "video_token_id": 248057,
    "vision_start_token_id": 248053,
    "vision_end_token_id": 248054,
    "tie_word_embeddings": False,
}

# Qwen/Qwen3.5-2B: the 9B's layout at 24 layers, narrower, with tied embeddings and a 24-block vision tower.
QWEN3_5_2B = {
    **QWEN3_5_9B,
    "text_config": {
        **QWEN3_5_9B["text_config"],
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 24,
        "layer_types": LAYER_PATTERN * 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "linear_num_value_heads": 16,
        "tie_word_embeddings": True,
    },
    "vision_config": {
        **QWEN3_5_9B["vision_config"],
        "depth": 24,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_heads": 16,
        "out_hidden_size": 2048,
    },
    "tie_word_embeddings": True,
}


def qwen3_5_9b_config(tokenizer=None, updates: dict[str, dict[str, Any]] | None = None):
    """Qwen3.5-9B's architecture; with `tokenizer`, its special-token ids (`core.families.base.published_config`).

    >>> config = qwen3_5_9b_config()
    >>> config.text_config.layer_types[:4], config.text_config.layer_types.count("full_attention")
    (['linear_attention', 'linear_attention', 'linear_attention', 'full_attention'], 8)
    >>> image_tokens(config, 350, 350, image_kwargs(350 * 350))  # a Kaggle wildfire tile: 32 px tokens
    VisualTokens(tokens=100, patches=400, wrapper_tokens=0)
    """
    return published_config("Qwen3_5Config", QWEN3_5_9B, tokenizer, updates, QWEN_VISION_TOKENS,
                            bos="<|endoftext|>", eos="<|endoftext|>")


def qwen3_5_2b_config(tokenizer=None, updates: dict[str, dict[str, Any]] | None = None):
    """Qwen3.5-2B's architecture; with `tokenizer`, its special-token ids."""
    return published_config("Qwen3_5Config", QWEN3_5_2B, tokenizer, updates, QWEN_VISION_TOKENS,
                            bos="<|endoftext|>", eos="<|endoftext|>")


def tiny_tokenizer():
    return build_tokenizer(list(QWEN3_ADDED_TOKENS), CHAT_TEMPLATE, model_max_length=262144)


def build_tiny(tokenizer):
    """Return (model, processor) shaped like Qwen3.5-9B, but tiny: one linear-attention and one full-attention
    layer, and Qwen3-VL's processors at tiny sizes."""
    from transformers import (
        Qwen3_5Config,
        Qwen3_5ForConditionalGeneration,
    )

    token_id = tokenizer.convert_tokens_to_ids
    text_config = {
        "vocab_size": padded_vocab_size(tokenizer),
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": TEXT_INTERMEDIATE,
        "num_hidden_layers": len(TINY_LAYER_TYPES),
        "layer_types": TINY_LAYER_TYPES,
        "num_attention_heads": TEXT_HEADS,
        "num_key_value_heads": TEXT_KV_HEADS,
        "head_dim": TINY_HEAD_DIM,
        # The 9B's ratios: twice as many value heads as query/key heads, a short causal convolution.
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {**ROPE, "mrope_section": TINY_MROPE_SECTION},
        "tie_word_embeddings": False,
        # config.json says <|endoftext|> (248044); the tokenizer ends a turn with <|im_end|> (llama.cpp reads 248046
        # as its EOS), and the tiny model keeps the config and the tokenizer agreeing, as every tiny row does.
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
        # An 8x8 learned position grid, interpolated to the picture like the 9B model's 48x48 one.
        "num_position_embeddings": 64,
    }
    config = Qwen3_5Config(
        text_config=text_config, vision_config=vision_config, **token_ids(tokenizer, QWEN_VISION_TOKENS),
        tie_word_embeddings=False,
    )
    model = Qwen3_5ForConditionalGeneration(config)
    model.generation_config = generation_config(tokenizer, stop=("<|im_end|>", "<|endoftext|>"), pad="<|endoftext|>")
    return model, tiny_processor(tokenizer, CHAT_TEMPLATE)


FAMILY = Family(
    key="qwen3_5",
    title="Qwen3.5",
    model_types=("qwen3_5",),
    presets=(
        Preset(MODEL_ID, "Qwen3.5 9B", 9.41, qwen3_5_9b_config),
        Preset(SMALL_MODEL_ID, "Qwen3.5 2B", 2.21, qwen3_5_2b_config),
    ),
    model_class="Qwen3_5ForConditionalGeneration",
    tiny_tokenizer=tiny_tokenizer,
    build_tiny=build_tiny,
    # Qwen3-VL's processors, so Qwen3-VL's arithmetic and kwargs (they read patch and merge sizes from the config).
    image_tokens=image_tokens,
    video_tokens=video_tokens,
    image_kwargs=image_kwargs,
    video_kwargs=video_kwargs,
    # A Qwen3.5 checkpoint loads as `Qwen3VLProcessor`, so `family_of_processor` finds the Qwen3-VL row for it; that
    # row's `video_kwargs` is this row's (the same function), so the answer is right for Qwen3.5 too.
    processor_classes=(),
    # `linear_attn` holds the Gated DeltaNet projections: attention for the language-attention toggle.
    attention_parts=(*ATTENTION_PARTS, "linear_attn"),
    # No DeepStack: the merger alone joins the towers.
    projector_parts=("merger",),
    # transformers runs the Gated DeltaNet layers with these when they import, else on its slow torch path. Not in
    # the gpu extra: causal-conv1d ships only as source that needs nvcc (or a matching prebuilt download), and
    # flash-linear-attention's Triton kernels need a GPU; the run's log says which path it takes.
    kernel_packages=(("fla", "flash-linear-attention"), ("causal_conv1d", "causal-conv1d")),
    full_size_processor=full_size_processor,
)
