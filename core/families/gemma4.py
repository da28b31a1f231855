"""Gemma 4: the family row, its published 31B architecture, its tiny model and its visual-token arithmetic.

Gemma 4 is not Gemma 3. A picture keeps its aspect ratio: it is resized (up or down) to the largest size whose
16 px patches fit a soft-token budget once pooled 3x3 (70, 140, 280, 560 or 1120 tokens; 280 by default), with
both sides multiples of 48 px, and written as "<|image>" + tokens + "<image|>" where the template put
"<|image|>". A clip goes through its own video processor (`Gemma4VideoProcessor`): each frame gets the same
resize at a budget of 70 tokens, and the processor writes every frame as "mm:ss <|image>" + tokens + "<image|>"
(frames joined by spaces) where the template put "<|video|>", reading the times from the clip's
`video_metadata`. The language model sees a 5:1 mix of sliding-window (1024 tokens) and global layers; the global
ones have 512-wide heads whose keys are their values (`attention_k_eq_v`), and in the sliding ones a picture's
tokens see each other both ways (`use_bidirectional_attention="vision"`, from the processor's
`mm_token_type_ids`).

The chat template has a system turn, renders `<bos>` itself, and has a thinking mode: with `enable_thinking`
false or absent, the generation prompt ends with an empty thought channel ("<|turn>model\\n<|channel>thought\\n
<channel|>"), so the model answers at once; the product renders every template with thinking off.

The preset is the dense 31B, the largest size a DGX Spark fine-tunes with LoRA. It takes no audio: the small
E2B and E4B sizes carry the audio tower (and per-layer embeddings), and their "effective" sizes leave those out.

Sources (the gated repo was not reachable here):
- Text tower: an inventory of config.json of cyankiwi/gemma-4-31B-it-AWQ-8bit (base google/gemma-4-31B-it; its
  own table reads hidden 5376, 60 layers, 21504 MLP, 32 heads, 16 key-value heads of 256 on sliding layers, 4 of
  512 on global ones with keys as values, sliding window 1024, global layers 5, 11, ..., 59, rope 10k / 1M with a
  partial factor 0.25, final logit soft-cap 30, tied embeddings, vocab 262144, 262144 positions, bidirectional
  attention for vision); a second project's table of the official sizes agrees on every text figure.
- Vision tower: 27 layers of width 1152, 16 px patches, 280 tokens a picture (the same inventory); 16 heads of 72,
  `standardize` on, clipped linears off (the official-size table); the MLP width 4304 (SigLIP-So400m's, as
  Gemma 3's) is UNVERIFIED, and the position table, pooling and rope are transformers' Gemma 4 defaults.
- Special-token ids: transformers' Gemma4Config defaults (the published ones: <|image> 255999, <|audio> 256000,
  <|image|> 258880, <|audio|> 258881, <image|> 258882, <audio|> 258883, <|video|> 258884) and Gemma's <pad> 0,
  <eos> 1, <bos> 2. The ids of the turn, thinking, channel and tool tokens are UNVERIFIED (only their order).
- Total: 30.7 B as the model card gives it (several copies). The meta-device count of this architecture is
  31.27 B: 30.70 B of language model and projector, exactly the card's figure, plus 0.57 B of vision tower, which
  the card's total leaves out (its own note puts the encoder at ~550 M); 1.9 % above, inside the 2 % check.
- Chat template: the google/gemma-4-31B-it template of hub commit 68abe480 as llama-cpp-python (JamePeng's fork,
  commit a641283, `Gemma4ChatHandler.CHAT_FORMAT`) copies it, with that copy's two changes undone: its media
  markers append the item's URL (restored to the bare "<|image|>", "<|audio|>" and "<|video|>" of the gemma-4-E2B
  template embedded in a published GGUF), and its generation prompt's "\\n" escapes had become newlines. That
  the result is byte-identical to the hub file is UNVERIFIED.
- Processing: transformers' Gemma 4 image and video processors at their defaults (16 px patches, 3x3 pooling,
  280 tokens a picture, 70 a frame, pixels in [0, 1]); that the published preprocessor configs keep them is
  UNVERIFIED.
"""

from __future__ import annotations

from typing import Any

from core.families.base import Family, Preset, VisualTokens, clip_metadata, published_config, token_ids
from core.families.tiny_parts import (
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

MODEL_ID = "google/gemma-4-31B-it"
# "<|image>" and "<image|>" the processor writes around a picture's tokens, in place of the template's "<|image|>".
IMAGE_WRAPPER_TOKENS = 2
# Around each frame: those two plus its "mm:ss " stamp, for the estimate only (about four tokens with Gemma's
# tokenizer, which splits digits: UNVERIFIED).
FRAME_WRAPPER_TOKENS = 6
# The soft-token budgets the image and video processors accept, and their defaults.
SOFT_TOKEN_BUDGETS = (70, 140, 280, 560, 1120)
IMAGE_SOFT_TOKENS = 280
FRAME_SOFT_TOKENS = 70
# The published geometry: 16 px patches pooled 3x3, so one token is 48x48 px.
PATCH = 16
POOLING = 3

# Gemma 4's specials in the real id order. <pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4; the turn, thinking,
# channel and tool tokens next (ids UNVERIFIED); then <|image> 255999, <|audio> 256000, <|image|> 258880,
# <|audio|> 258881, <image|> 258882, <audio|> 258883, <|video|> 258884.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<pad>", True),
    ("<eos>", True),
    ("<bos>", True),
    ("<unk>", True),
    ("<mask>", True),
    ('<|"|>', True),
    ("<|tool>", True),
    ("<tool|>", True),
    ("<|tool_call>", True),
    ("<tool_call|>", True),
    ("<|tool_response>", True),
    ("<tool_response|>", True),
    ("<|think|>", True),
    ("<|channel>", True),
    ("<channel|>", True),
    ("<|turn>", True),
    ("<turn|>", True),
    ("<|image>", True),
    ("<|audio>", True),
    ("<|image|>", True),
    ("<|audio|>", True),
    ("<image|>", True),
    ("<audio|>", True),
    ("<|video|>", True),
)
# Gemma4Processor reads these from the tokenizer (tokenizer.image_token, ...); it refuses any input while the
# audio ones are missing, audio or not.
NAMED_TOKENS = {
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
    "video_token": "<|video|>",
}
MEDIA_TOKENS = {
    "boi_token_id": "<|image>",
    "eoi_token_id": "<image|>",
    "image_token_id": "<|image|>",
    "video_token_id": "<|video|>",
    "boa_token_id": "<|audio>",
    "eoa_token_index": "<audio|>",
    "audio_token_id": "<|audio|>",
}

# Tiny: 2 px patches pooled 3x3 (one token is 6x6 px), so the smallest budget, 70 tokens, is a ~50x50 px picture.
TINY_PATCH = 2
# One sliding layer and one global one (the 31B model has five sliding layers to each global one), global heads
# twice as wide with keys as values and fewer of them, as the 31B model's 256/512 and 16/4.
TINY_LAYER_TYPES = ["sliding_attention", "full_attention"]
TINY_SLIDING_WINDOW = 64
TINY_HEAD_DIM = TEXT_HIDDEN // TEXT_HEADS
# Patch positions up to 256 a side: a 1:8 frame at the tiny budget spans 210 patches.
TINY_POSITIONS = 256
ROPE_PARAMETERS = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
}

# Chat template of the Gemma 4 "-it" models (see the module docstring for where it came from). It renders
# {{ bos_token }} itself, and an empty thought channel after the generation prompt unless `enable_thinking`.
CHAT_TEMPLATE = (
    "{%- macro format_parameters(properties, required, filter_keys=false) -%}\n"
    "    {%- set standard_keys = ['description', 'type', 'properties', 'required', 'nullable'] -%}\n"
    "    {%- set ns = namespace(found_first=false) -%}\n"
    "    {%- for key, value in properties | dictsort -%}\n"
    "        {%- set add_comma = false -%}\n"
    "        {%- if not filter_keys or key not in standard_keys -%}\n"
    "            {%- if ns.found_first %},{% endif -%}\n"
    "            {%- set ns.found_first = true -%}\n"
    "            {{ key }}:{\n"
    "            {%- if value['description'] -%}\n"
    "                description:<|\"|>{{ value['description'] }}<|\"|>\n"
    "                {%- set add_comma = true -%}\n"
    "            {%- endif -%}\n"
    "            {%- if value['type'] | upper == 'STRING' -%}\n"
    "                {%- if value['enum'] -%}\n"
    "                    {%- if add_comma %},{%- else -%} {%- set add_comma = true -%} {% endif -%}\n"
    "                    enum:{{ format_argument(value['enum']) }}\n"
    "                {%- endif -%}\n"
    "            {%- elif value['type'] | upper == 'ARRAY' -%}\n"
    "                {%- if value['items'] is mapping and value['items'] -%}\n"
    "                    {%- if add_comma %},{%- else -%} {%- set add_comma = true -%} {% endif -%}\n"
    "                    items:{\n"
    "                    {%- set ns_items = namespace(found_first=false) -%}\n"
    "                    {%- for item_key, item_value in value['items'] | dictsort -%}\n"
    "                        {%- if item_value is not none -%}\n"
    "                            {%- if ns_items.found_first %},{% endif -%}\n"
    "                            {%- set ns_items.found_first = true -%}\n"
    "                            {%- if item_key == 'properties' -%}\n"
    "                                properties:{\n"
    "                                {%- if item_value is mapping -%}\n"
    "                                    {{- format_parameters(item_value, value['items']['required'] | d"
    "efault([])) -}}\n"
    "                                {%- endif -%}\n"
    "                                }\n"
    "                            {%- elif item_key == 'required' -%}\n"
    "                                required:[\n"
    "                                {%- for req_item in item_value -%}\n"
    "                                    <|\"|>{{- req_item -}}<|\"|>\n"
    "                                    {%- if not loop.last %},{% endif -%}\n"
    "                                {%- endfor -%}\n"
    "                                ]\n"
    "                            {%- elif item_key == 'type' -%}\n"
    "                                {%- if item_value is string -%}\n"
    "                                    type:{{ format_argument(item_value | upper) }}\n"
    "                                {%- else -%}\n"
    "                                    type:{{ format_argument(item_value | map('upper') | list) }}\n"
    "                                {%- endif -%}\n"
    "                            {%- else -%}\n"
    "                                {{ item_key }}:{{ format_argument(item_value) }}\n"
    "                            {%- endif -%}\n"
    "                        {%- endif -%}\n"
    "                    {%- endfor -%}\n"
    "                    }\n"
    "                {%- endif -%}\n"
    "            {%- endif -%}\n"
    "            {%- if value['nullable'] %}\n"
    "                {%- if add_comma %},{%- else -%} {%- set add_comma = true -%} {% endif -%}\n"
    "                nullable:true\n"
    "            {%- endif -%}\n"
    "            {%- if value['type'] | upper == 'OBJECT' -%}\n"
    "                {%- if value['properties'] is defined and value['properties'] is mapping -%}\n"
    "                    {%- if add_comma %},{%- else -%} {%- set add_comma = true -%} {% endif -%}\n"
    "                    properties:{\n"
    "                    {{- format_parameters(value['properties'], value['required'] | default([])) -}}\n"
    "                    }\n"
    "                {%- elif value is mapping -%}\n"
    "                    {%- if add_comma %},{%- else -%} {%- set add_comma = true -%} {% endif -%}\n"
    "                    properties:{\n"
    "                    {{- format_parameters(value, value['required'] | default([]), filter_keys=true) -}}\n"
    "                    }\n"
    "                {%- endif -%}\n"
    "                {%- if value['required'] -%}\n"
    "                    {%- if add_comma %},{%- else -%} {%- set add_comma = true -%} {% endif -%}\n"
    "                    required:[\n"
    "                    {%- for item in value['required'] | default([]) -%}\n"
    "                        <|\"|>{{- item -}}<|\"|>\n"
    "                        {%- if not loop.last %},{% endif -%}\n"
    "                    {%- endfor -%}\n"
    "                    ]\n"
    "                {%- endif -%}\n"
    "            {%- endif -%}\n"
    "            {%- if add_comma %},{%- else -%} {%- set add_comma = true -%} {% endif -%}\n"
    "            type:<|\"|>{{ value['type'] | upper }}<|\"|>}\n"
    "        {%- endif -%}\n"
    "    {%- endfor -%}\n"
    "{%- endmacro -%}\n"
    "{%- macro format_function_declaration(tool_data) -%}\n"
    "    declaration:{{- tool_data['function']['name'] -}}{description:<|\"|>{{- tool_data['function']['de"
    "scription'] -}}<|\"|>\n"
    "    {%- set params = tool_data['function']['parameters'] -%}\n"
    "    {%- if params -%}\n"
    "        ,parameters:{\n"
    "        {%- if params.get('properties') -%}\n"
    "            properties:{ {{- format_parameters(params['properties'], params['required']) -}} },\n"
    "        {%- endif -%}\n"
    "        {%- if params.get('required') -%}\n"
    "            required:[\n"
    "            {%- for item in params['required'] -%}\n"
    "                <|\"|>{{- item -}}<|\"|>\n"
    "                {{- ',' if not loop.last -}}\n"
    "            {%- endfor -%}\n"
    "            ],\n"
    "        {%- endif -%}\n"
    "        {%- if params.get('type') -%}\n"
    "            type:<|\"|>{{- params['type'] | upper -}}<|\"|>}\n"
    "        {%- endif -%}\n"
    "    {%- endif -%}\n"
    "    {%- if 'response' in tool_data['function'] -%}\n"
    "        {%- set response_declaration = tool_data['function']['response'] -%}\n"
    "        ,response:{\n"
    "        {%- if response_declaration['description'] -%}\n"
    "            description:<|\"|>{{- response_declaration['description'] -}}<|\"|>,\n"
    "        {%- endif -%}\n"
    "        {%- if response_declaration['type'] | upper == 'OBJECT' -%}\n"
    "            type:<|\"|>{{- response_declaration['type'] | upper -}}<|\"|>}\n"
    "        {%- endif -%}\n"
    "    {%- endif -%}\n"
    "    }\n"
    "{%- endmacro -%}\n"
    "{%- macro format_argument(argument, escape_keys=True) -%}\n"
    "    {%- if argument is none -%}\n"
    "        {{- 'null' -}}\n"
    "    {%- elif argument is string -%}\n"
    "        {{- '<|\"|>' + argument + '<|\"|>' -}}\n"
    "    {%- elif argument is boolean -%}\n"
    "        {{- 'true' if argument else 'false' -}}\n"
    "    {%- elif argument is mapping -%}\n"
    "        {{- '{' -}}\n"
    "        {%- set ns = namespace(found_first=false) -%}\n"
    "        {%- for key, value in argument | dictsort -%}\n"
    "            {%- if ns.found_first %},{% endif -%}\n"
    "            {%- set ns.found_first = true -%}\n"
    "            {%- if escape_keys -%}\n"
    "                {{- '<|\"|>' + key + '<|\"|>' -}}\n"
    "            {%- else -%}\n"
    "                {{- key -}}\n"
    "            {%- endif -%}\n"
    "            :{{- format_argument(value, escape_keys=escape_keys) -}}\n"
    "        {%- endfor -%}\n"
    "        {{- '}' -}}\n"
    "    {%- elif argument is sequence -%}\n"
    "        {{- '[' -}}\n"
    "        {%- for item in argument -%}\n"
    "            {{- format_argument(item, escape_keys=escape_keys) -}}\n"
    "            {%- if not loop.last %},{% endif -%}\n"
    "        {%- endfor -%}\n"
    "        {{- ']' -}}\n"
    "    {%- else -%}\n"
    "        {{- argument -}}\n"
    "    {%- endif -%}\n"
    "{%- endmacro -%}\n"
    "{%- macro strip_thinking(text) -%}\n"
    "    {%- set ns = namespace(result='') -%}\n"
    "    {%- for part in text.split('<channel|>') -%}\n"
    "        {%- if '<|channel>' in part -%}\n"
    "            {%- set ns.result = ns.result + part.split('<|channel>')[0] -%}\n"
    "        {%- else -%}\n"
    "            {%- set ns.result = ns.result + part -%}\n"
    "        {%- endif -%}\n"
    "    {%- endfor -%}\n"
    "    {{- ns.result | trim -}}\n"
    "{%- endmacro -%}\n"
    "\n"
    "{%- macro format_tool_response_block(tool_name, response) -%}\n"
    "    {{- '<|tool_response>' -}}\n"
    "    {%- if response is mapping -%}\n"
    "        {{- 'response:' + tool_name + '{' -}}\n"
    "        {%- for key, value in response | dictsort -%}\n"
    "            {{- key -}}:{{- format_argument(value, escape_keys=False) -}}\n"
    "            {%- if not loop.last %},{% endif -%}\n"
    "        {%- endfor -%}\n"
    "        {{- '}' -}}\n"
    "    {%- else -%}\n"
    "        {{- 'response:' + tool_name + '{value:' + format_argument(response, escape_keys=False) + '}' -}}\n"
    "    {%- endif -%}\n"
    "    {{- '<tool_response|>' -}}\n"
    "{%- endmacro -%}\n"
    "\n"
    "{#- ===== SETUP ===== -#}{%- set ns = namespace(prev_message_type=None) -%}\n"
    "{%- set loop_messages = messages -%}\n"
    "{%- set enable_thinking = enable_thinking | default(false) -%}\n"
    "{%- set preserve_thinking = preserve_thinking | default(false) -%}\n"
    "{{- bos_token -}}\n"
    "{#- Handle System/Tool Definitions Block -#}\n"
    "{%- if enable_thinking or tools or (messages and messages[0]['role'] in ['system', 'developer']) -%}\n"
    "    {{- '<|turn>system\\n' -}}\n"
    "    {#- Inject Thinking token at the very top of the FIRST system turn -#}\n"
    "    {%- if enable_thinking -%}\n"
    "        {{- '<|think|>\\n' -}}\n"
    "        {%- set ns.prev_message_type = 'think' -%}\n"
    "    {%- endif -%}\n"
    "    {%- if messages and messages[0]['role'] in ['system', 'developer'] -%}\n"
    "        {%- if messages[0]['content'] is string -%}\n"
    "            {{- messages[0]['content'] | trim -}}\n"
    "        {%- elif messages[0]['content'] is sequence -%}\n"
    "            {%- for item in messages[0]['content'] -%}\n"
    "                {{- item['text'] | trim + ' '-}}\n"
    "            {%- endfor -%}\n"
    "        {%- endif -%}\n"
    "        {%- set loop_messages = messages[1:] -%}\n"
    "    {%- endif -%}\n"
    "    {%- if tools -%}\n"
    "        {%- for tool in tools %}\n"
    "            {{- '<|tool>' -}}\n"
    "            {{- format_function_declaration(tool) | trim -}}\n"
    "            {{- '<tool|>' -}}\n"
    "        {%- endfor %}\n"
    "        {%- set ns.prev_message_type = 'tool' -%}\n"
    "    {%- endif -%}\n"
    "    {{- '<turn|>\\n' -}}\n"
    "{%- endif %}\n"
    "\n"
    "{#- Pre-scan: find last user message index for reasoning guard -#}\n"
    "{%- set ns_turn = namespace(last_user_idx=-1) -%}\n"
    "{%- for i in range(loop_messages | length) -%}\n"
    "    {%- if loop_messages[i]['role'] == 'user' -%}\n"
    "        {%- set ns_turn.last_user_idx = i -%}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "\n"
    "{#- Loop through messages -#}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if message['role'] != 'tool' -%}\n"
    "    {%- set ns.prev_message_type = None -%}\n"
    "    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\n"
    "{#- Detect continuation using tracked state — O(1) instead of O(n) backward scan -#}\n"
    "{%- set continue_same_model_turn = (role == 'model' and ns.prev_non_tool_role == 'assistant') -%}\n"
    "    {%- if not continue_same_model_turn -%}\n"
    "        {{- '<|turn>' + role + '\\n' }}\n"
    "    {%- endif -%}\n"
    "\n"
    "    {#- Render reasoning/reasoning_content as thinking channel -#}\n"
    "    {%- set thinking_text = message.get('reasoning') or message.get('reasoning_content') -%}\n"
    "    {%- set thinking_gate = (loop.index0 > ns_turn.last_user_idx) or (preserve_thinking and message."
    "get('tool_calls')) -%}\n"
    "    {%- if thinking_text and thinking_gate -%}\n"
    "        {{- '<|channel>thought\\n' + thinking_text + '\\n<channel|>' -}}\n"
    "    {%- endif -%}\n"
    "\n"
    "            {%- if message.get('tool_calls') -%}\n"
    "                {%- for tool_call in message.get('tool_calls') -%}\n"
    "                    {%- set function = tool_call['function'] -%}\n"
    "                    {{- '<|tool_call>call:' + function['name'] + '{' -}}\n"
    "                    {%- if function['arguments'] is mapping -%}\n"
    "                        {%- set ns_args = namespace(found_first=false) -%}\n"
    "                        {%- for key, value in function['arguments'] | dictsort -%}\n"
    "                            {%- if ns_args.found_first %},{% endif -%}\n"
    "                            {%- set ns_args.found_first = true -%}\n"
    "                            {{- key -}}:{{- format_argument(value, escape_keys=False) -}}\n"
    "                        {%- endfor -%}\n"
    "                    {%- elif function['arguments'] is none -%}\n"
    "                    {%- else -%}\n"
    "                        {{- raise_exception(\n"
    "                            \"chat_template: tool_calls[].function.arguments must be a \"\n"
    "                            \"JSON object (mapping), not a string. Deserialize arguments \"\n"
    "                            \"before passing to the template.\"\n"
    "                        ) -}}\n"
    "                    {%- endif -%}\n"
    "                    {{- '}<tool_call|>' -}}\n"
    "                {%- endfor -%}\n"
    "                {%- set ns.prev_message_type = 'tool_call' -%}\n"
    "            {%- endif -%}\n"
    "\n"
    "            {%- set ns_tr_out = namespace(flag=false) -%}\n"
    "            {%- if message.get('tool_responses') -%}\n"
    "                {#- Legacy: tool_responses embedded on the assistant message (Google/Gemma native) -#}\n"
    "                {%- for tool_response in message.get('tool_responses') -%}\n"
    "                    {{- format_tool_response_block(tool_response['name'] | default('unknown', true),"
    " tool_response['response']) -}}\n"
    "                    {%- set ns_tr_out.flag = true -%}\n"
    "                    {%- set ns.prev_message_type = 'tool_response' -%}\n"
    "                {%- endfor -%}\n"
    "            {%- elif message.get('tool_calls') -%}\n"
    "                {#- OpenAI Chat Completions: forward-scan consecutive role:tool messages -#}\n"
    "                {%- set ns_tool_scan = namespace(stopped=false) -%}\n"
    "                {%- for k in range(loop.index0 + 1, loop_messages | length) -%}\n"
    "                    {%- if ns_tool_scan.stopped -%}\n"
    "                    {%- elif loop_messages[k]['role'] != 'tool' -%}\n"
    "                        {%- set ns_tool_scan.stopped = true -%}\n"
    "                    {%- else -%}\n"
    "                        {%- set follow = loop_messages[k] -%}\n"
    "                        {#- Resolve tool_call_id to function name -#}\n"
    "                        {%- set ns_tname = namespace(name=follow.get('name') or 'unknown') -%}\n"
    "                        {%- for tc in message.get('tool_calls') -%}\n"
    "                            {%- if tc.get('id') == follow.get('tool_call_id') -%}\n"
    "                                {%- set ns_tname.name = tc['function']['name'] -%}\n"
    "                            {%- endif -%}\n"
    "                        {%- endfor -%}\n"
    "                        {#- Handle content as string or content-parts array -#}\n"
    "                        {%- set tool_body = follow.get('content') -%}\n"
    "                        {%- if tool_body is string -%}\n"
    "                            {{- format_tool_response_block(ns_tname.name, tool_body) -}}\n"
    "                        {%- elif tool_body is sequence and tool_body is not string -%}\n"
    "                            {%- set ns_txt = namespace(s='') -%}\n"
    "                            {%- for part in tool_body -%}\n"
    "                                {%- if part.get('type') == 'text' -%}\n"
    "                                    {%- set ns_txt.s = ns_txt.s + (part.get('text') | default('')) -%}\n"
    "                                {%- endif -%}\n"
    "                            {%- endfor -%}\n"
    "                            {{- format_tool_response_block(ns_tname.name, ns_txt.s) -}}\n"
    "                            {%- for part in tool_body -%}\n"
    "                                {%- if part.get('type') in ['image', 'image_url'] -%}\n"
    "                                    {{- '<|image|>' -}}\n"
    "                                {%- elif part.get('type') in ['audio', 'input_audio'] -%}\n"
    "                                    {{- '<|audio|>' -}}\n"
    "                                {%- elif part.get('type') == 'video' -%}\n"
    "                                    {{- '<|video|>' -}}\n"
    "                                {%- endif -%}\n"
    "                            {%- endfor -%}\n"
    "                        {%- else -%}\n"
    "                            {{- format_tool_response_block(ns_tname.name, tool_body) -}}\n"
    "                        {%- endif -%}\n"
    "                        {%- set ns_tr_out.flag = true -%}\n"
    "                        {%- set ns.prev_message_type = 'tool_response' -%}\n"
    "                    {%- endif -%}\n"
    "                {%- endfor -%}\n"
    "            {%- endif -%}\n"
    "\n"
    "            {%- set captured_content -%}\n"
    "            {%- if message.get('content') is string -%}\n"
    "                {%- if role == 'model' -%}\n"
    "                    {{- strip_thinking(message['content']) -}}\n"
    "                {%- else -%}\n"
    "                    {{- message['content'] | trim -}}\n"
    "                {%- endif -%}\n"
    "            {%- elif message.get('content') is sequence -%}\n"
    "                {%- for item in message['content'] -%}\n"
    "                    {%- if item.get('type') == 'text' -%}\n"
    "                        {%- if role == 'model' -%}\n"
    "                            {{- strip_thinking(item['text']) -}}\n"
    "                        {%- else -%}\n"
    "                            {{- item['text'] | trim -}}\n"
    "                        {%- endif -%}\n"
    "                    {%- elif item.get('type') in ['image', 'image_url'] -%}\n"
    "                        {{- '<|image|>' -}}\n"
    "                    {%- elif item.get('type') in ['audio', 'input_audio'] -%}\n"
    "                        {{- '<|audio|>' -}}\n"
    "                    {%- elif item.get('type') == 'video' -%}\n"
    "                        {{- '<|video|>' -}}\n"
    "                    {%- endif -%}\n"
    "                {%- endfor -%}\n"
    "            {%- endif -%}\n"
    "            {%- endset -%}\n"
    "\n"
    "            {{- captured_content -}}\n"
    "            {%- set has_content = captured_content | trim | length > 0 -%}\n"
    "\n"
    "        {#- Forward-scan: find next non-tool message role for continuation detection -#}\n"
    "        {%- set next_nt = namespace(role=None, found=false) -%}\n"
    "        {%- for j in range(loop.index0 + 1, loop_messages | length) -%}\n"
    "            {%- if not next_nt.found -%}\n"
    "                {%- if loop_messages[j]['role'] != 'tool' -%}\n"
    "                    {%- set next_nt.role = loop_messages[j]['role'] -%}\n"
    "                    {%- set next_nt.found = true -%}\n"
    "                {%- endif -%}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "        {%- set continues_into_next = (\n"
    "            role == 'model'\n"
    "            and next_nt.role == 'assistant'\n"
    "            and (not message.get('tool_calls') or ns_tr_out.flag)\n"
    "        ) -%}\n"
    "\n"
    "        {%- if ns.prev_message_type == 'tool_call' and not ns_tr_out.flag -%}\n"
    "            {{- '<|tool_response>' -}}\n"
    "        {%- elif continues_into_next -%}\n"
    "        {%- elif not (ns_tr_out.flag and not has_content and not next_nt.found) -%}\n"
    "            {{- '<turn|>\\n' -}}\n"
    "        {%- endif -%}\n"
    "\n"
    "    {#- Track previous non-tool role for next iteration (avoids O(n) backward scan) -#}\n"
    "    {%- set ns.prev_non_tool_role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "\n"
    "{%- if add_generation_prompt -%}\n"
    "    {%- if ns.prev_message_type != 'tool_response' and ns.prev_message_type != 'tool_call' -%}\n"
    "        {{- '<|turn>model\\n' -}}\n"
    "        {%- if not enable_thinking -%}\n"
    "            {{- '<|channel>thought\\n<channel|>' -}}\n"
    "        {%- endif -%}\n"
    "    {%- elif ns.prev_message_type == 'tool_response' and enable_thinking -%}\n"
    "        {{- '<|channel>thought\\n' -}}\n"
    "    {%- endif -%}\n"
    "{%- endif -%}\n"
)

# google/gemma-4-31B-it, config.json (see the module docstring for each figure's source), in transformers 5's form.
GEMMA4_31B = {
    "text_config": {
        "model_type": "gemma4_text",
        "vocab_size": 262144,
        "hidden_size": 5376,
        "intermediate_size": 21504,
        "num_hidden_layers": 60,
        "num_attention_heads": 32,
        "num_key_value_heads": 16,
        "head_dim": 256,
        "global_head_dim": 512,
        "num_global_key_value_heads": 4,
        "attention_k_eq_v": True,
        "hidden_activation": "gelu_pytorch_tanh",
        "sliding_window": 1024,
        "layer_types": ["full_attention" if (index + 1) % 6 == 0 else "sliding_attention" for index in range(60)],
        "rope_parameters": ROPE_PARAMETERS,
        "final_logit_softcapping": 30.0,
        "use_bidirectional_attention": "vision",
        "hidden_size_per_layer_input": 0,
        "num_kv_shared_layers": 0,
        "enable_moe_block": False,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 262144,
        "tie_word_embeddings": True,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
    },
    "vision_config": {
        "model_type": "gemma4_vision",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "head_dim": 72,
        "patch_size": PATCH,
        "pooling_kernel_size": POOLING,
        "standardize": True,
        "use_clipped_linears": False,
    },
    "audio_config": None,
    "boi_token_id": 255999,
    "eoi_token_id": 258882,
    "image_token_id": 258880,
    "video_token_id": 258884,
    "boa_token_id": 256000,
    "eoa_token_index": 258883,
    "audio_token_id": 258881,
    "tie_word_embeddings": True,
}


def gemma4_31b_config(tokenizer=None, updates: dict[str, dict[str, Any]] | None = None):
    """Gemma-4-31B's architecture; with `tokenizer`, its special-token ids (`core.families.base.published_config`),
    and generation stopping at either `<eos>` or `<turn|>`."""
    config = published_config(
        "Gemma4Config", GEMMA4_31B, tokenizer, updates, MEDIA_TOKENS, bos="<bos>", eos="<eos>", pad="<pad>"
    )
    if tokenizer is not None:
        stops = token_ids(tokenizer, {"eos": "<eos>", "end_of_turn": "<turn|>"})
        config.text_config.eos_token_id = list(stops.values())
    return config


def tiny_tokenizer():
    return build_tokenizer(
        list(ADDED_TOKENS),
        CHAT_TEMPLATE,
        model_max_length=262144,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        add_bos_token=True,
        extra_special_tokens=dict(NAMED_TOKENS),
    )


def build_tiny(tokenizer):
    """Return (model, processor) shaped like gemma-4-31B-it, but tiny."""
    from transformers import (
        Gemma4AudioFeatureExtractor,
        Gemma4Config,
        Gemma4ForConditionalGeneration,
        Gemma4ImageProcessor,
        Gemma4Processor,
        Gemma4VideoProcessor,
    )

    token_id = tokenizer.convert_tokens_to_ids
    config = Gemma4Config(
        text_config={
            "model_type": "gemma4_text",
            "vocab_size": padded_vocab_size(tokenizer),
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": TEXT_INTERMEDIATE,
            "num_hidden_layers": TEXT_LAYERS,
            "num_attention_heads": TEXT_HEADS,
            "num_key_value_heads": TEXT_KV_HEADS,
            "head_dim": TINY_HEAD_DIM,
            "global_head_dim": 2 * TINY_HEAD_DIM,
            "num_global_key_value_heads": 1,
            "attention_k_eq_v": True,
            "sliding_window": TINY_SLIDING_WINDOW,
            "layer_types": TINY_LAYER_TYPES,
            "rope_parameters": ROPE_PARAMETERS,
            "final_logit_softcapping": 30.0,
            "use_bidirectional_attention": "vision",
            "hidden_size_per_layer_input": 0,
            "max_position_embeddings": 262144,
            "tie_word_embeddings": True,
            "bos_token_id": token_id("<bos>"),
            "eos_token_id": token_id("<eos>"),
            "pad_token_id": token_id("<pad>"),
        },
        vision_config={
            "model_type": "gemma4_vision",
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": VISION_INTERMEDIATE,
            "num_hidden_layers": VISION_LAYERS,
            "num_attention_heads": VISION_HEADS,
            "num_key_value_heads": VISION_HEADS,
            "head_dim": VISION_HIDDEN // VISION_HEADS,
            "patch_size": TINY_PATCH,
            "pooling_kernel_size": POOLING,
            "position_embedding_size": TINY_POSITIONS,
            "standardize": True,
            "use_clipped_linears": False,
        },
        audio_config=None,
        **{key: token_id(token) for key, token in MEDIA_TOKENS.items()},
        tie_word_embeddings=True,
    )
    model = Gemma4ForConditionalGeneration(config)
    geometry = dict(patch_size=TINY_PATCH, pooling_kernel_size=POOLING)
    processor = Gemma4Processor(
        # The processor takes an audio feature extractor whatever the size; the 31B model never uses it.
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=Gemma4ImageProcessor(max_soft_tokens=min(SOFT_TOKEN_BUDGETS), **geometry),
        tokenizer=tokenizer,
        video_processor=Gemma4VideoProcessor(max_soft_tokens=FRAME_SOFT_TOKENS, **geometry),
        chat_template=CHAT_TEMPLATE,
        image_seq_length=min(SOFT_TOKEN_BUDGETS),
    )
    model.generation_config = generation_config(tokenizer, stop=("<eos>", "<turn|>"), pad="<pad>", bos="<bos>")
    return model, processor


def image_kwargs(max_pixels: int) -> dict[str, Any]:
    """The largest soft-token budget whose pictures (48x48 px a token at the published geometry) stay within
    `max_pixels`, never below the smallest, 70 tokens (about 400x400 px).

    >>> image_kwargs(350 * 350), image_kwargs(896 * 896), image_kwargs(4000 * 4000)
    ({'max_soft_tokens': 70}, {'max_soft_tokens': 280}, {'max_soft_tokens': 1120})
    """
    token_pixels = (PATCH * POOLING) ** 2
    fitting = [budget for budget in SOFT_TOKEN_BUDGETS if budget * token_pixels <= max_pixels]
    return {"max_soft_tokens": max(fitting, default=min(SOFT_TOKEN_BUDGETS))}


def resized_patches(vision, height: int, width: int, budget: int) -> tuple[int, int]:
    """(rows, columns) of patches of a picture or frame resized by the processors' own rule to `budget` tokens."""
    from transformers.models.gemma4.image_processing_gemma4 import get_aspect_ratio_preserving_size

    patch, pooling = vision.patch_size, vision.pooling_kernel_size
    h, w = get_aspect_ratio_preserving_size(
        height=height, width=width, patch_size=patch, max_patches=budget * pooling**2, pooling_kernel_size=pooling
    )
    return h // patch, w // patch


def image_tokens(config, height: int, width: int, kwargs: dict[str, Any]) -> VisualTokens:
    """Tokens and patches of one picture, by the image processor's aspect-preserving resize (up or down).

    >>> image_tokens(gemma4_31b_config(), 350, 350, image_kwargs(350 * 350))  # a Kaggle wildfire tile
    VisualTokens(tokens=64, patches=576, wrapper_tokens=2)
    """
    vision = config.vision_config
    rows, columns = resized_patches(vision, height, width, kwargs.get("max_soft_tokens", IMAGE_SOFT_TOKENS))
    return VisualTokens(rows * columns // vision.pooling_kernel_size**2, rows * columns, IMAGE_WRAPPER_TOKENS)


def video_kwargs(shapes: list[tuple[int, int, int]], timestamps: list[list[float]]) -> dict[str, Any]:
    """Each frame at the video processor's budget, named (70 tokens), and each clip's real frame times, which the
    processor prints before each frame.

    >>> kwargs = video_kwargs([(8, 252, 448)], [[0.25 + 0.5 * i for i in range(8)]])
    >>> kwargs["max_soft_tokens"], kwargs["video_metadata"][0]["frames_indices"][:2]
    (70, [250, 750])
    """
    return {"max_soft_tokens": FRAME_SOFT_TOKENS, "video_metadata": [clip_metadata(times) for times in timestamps]}


def video_tokens(config, frames: int, height: int, width: int, kwargs: dict[str, Any]) -> VisualTokens:
    """Tokens and patches of a clip: every frame resized on its own, as a picture at the clip budget.

    >>> video_tokens(gemma4_31b_config(), 8, 252, 448, video_kwargs([(8, 252, 448)], [[0.5 * i for i in range(8)]]))
    VisualTokens(tokens=528, patches=4752, wrapper_tokens=48)
    """
    vision = config.vision_config
    rows, columns = resized_patches(vision, height, width, kwargs.get("max_soft_tokens", FRAME_SOFT_TOKENS))
    per_frame = rows * columns // vision.pooling_kernel_size**2
    return VisualTokens(frames * per_frame, frames * rows * columns, frames * FRAME_WRAPPER_TOKENS)


def full_size_processor(processor: dict[str, Any], config) -> dict[str, Any]:
    """The tiny processor set to the published geometry: 16 px patches, 280 tokens a picture, 70 a frame."""
    vision = config.vision_config
    for name, budget in (("image_processor", IMAGE_SOFT_TOKENS), ("video_processor", FRAME_SOFT_TOKENS)):
        processor[name].update(
            patch_size=vision.patch_size, pooling_kernel_size=vision.pooling_kernel_size, max_soft_tokens=budget
        )
    processor["image_seq_length"] = IMAGE_SOFT_TOKENS
    return processor


FAMILY = Family(
    key="gemma4",
    title="Gemma 4",
    model_types=("gemma4",),
    presets=(Preset(MODEL_ID, "Gemma 4 31B it", 30.7, gemma4_31b_config, gated=True),),
    model_class="Gemma4ForConditionalGeneration",
    tiny_tokenizer=tiny_tokenizer,
    build_tiny=build_tiny,
    image_tokens=image_tokens,
    video_tokens=video_tokens,
    image_kwargs=image_kwargs,
    video_kwargs=video_kwargs,
    processor_classes=("Gemma4Processor",),
    # What joins the towers: `embed_vision` (and the small sizes' `embed_audio`), a norm and one projection.
    projector_parts=("embed_vision", "embed_audio"),
    # The audio tower of the small sizes stays out of LoRA and 4-bit like the vision tower.
    vision_parts=("vision_tower", "audio_tower"),
    full_size_processor=full_size_processor,
)
