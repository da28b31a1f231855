"""What every family's tiny model shares: the tower sizes, a byte-level BPE tokenizer trained on a small built-in
corpus (the tasks' text and general English, so task text encodes into a few dozen tokens instead of one token
per byte), and the stop settings of its generation config.

Each family (`core.families.<family>`) adds its own special tokens and real chat template to this tokenizer and
builds its model at these sizes, so tests and CPU smoke runs exercise the real loading code with no download.
"""

from __future__ import annotations

import json
from typing import Any

TOKENIZER_VOCAB_SIZE = 1536
# Text towers are rounded up to a multiple of this so the embedding matrix has a tidy size.
VOCAB_MULTIPLE = 64

# Shared text-tower shape. head_dim = 64 / 4 = 16, so rotary uses 8 frequency pairs.
TEXT_HIDDEN = 64
TEXT_LAYERS = 2
TEXT_HEADS = 4
TEXT_KV_HEADS = 2
TEXT_INTERMEDIATE = 128
VISION_HIDDEN = 32
VISION_LAYERS = 2
VISION_HEADS = 2
VISION_INTERMEDIATE = 64

# InternVL normalises with ImageNet statistics; Qwen2.5-VL with OpenAI CLIP statistics.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Qwen3-VL, SmolVLM2 and Gemma 3 (SigLIP-style towers) map pixels to [-1, 1].
HALF_MEAN_STD = [0.5, 0.5, 0.5]

# Qwen2.5 added tokens, in the same order (hence relative ids) as the real tokenizer.
# The flag says whether the real tokenizer marks the token "special" (skipped on decode).
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
# Qwen3's tokenizer (Qwen3-VL's, InternVL3.5's text tower's) appends four more, so every later id moves up by 4.
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = QWEN_ADDED_TOKENS + (
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

_WILDFIRE_SENTENCES = (
    "Is there a wildfire in this satellite image? Answer Yes or No.",
    "Look at the satellite image and decide whether it shows a wildfire.",
    "Think step by step inside <REASONING> and </REASONING>, then give the final answer "
    "inside <SOLUTION> and </SOLUTION>.",
    "<REASONING>I see thick smoke rising over the forest and burned areas, so this is a "
    "wildfire.</REASONING><SOLUTION>Yes</SOLUTION>",
    "<REASONING>The image shows green forest, fields, roads and a river with no smoke or fire."
    "</REASONING><SOLUTION>No</SOLUTION>",
    "<REASONING>There is no smoke, no flames and no burn scar in the image.</REASONING>"
    "<SOLUTION>No</SOLUTION>",
    "<REASONING>Grey smoke plumes drift over dry vegetation near the hills.</REASONING>"
    "<SOLUTION>Yes</SOLUTION>",
    "The satellite image shows a dense forest, clouds, water, urban buildings, farmland, "
    "a lake, mountains, a desert and grassland.",
    "Wildfire smoke, fire, flames, burn scars and haze are visible from space.",
    "You are a helpful assistant. You are an expert at analysing satellite imagery.",
    "Answer with Yes if a wildfire is present, otherwise answer No.",
    "The answer is Yes. The answer is No. yes no true false",
)

_VIDEO_SENTENCES = (
    "Describe the dashcam video and return a JSON object with the keys caption, event_type, "
    "rule_violations, intended_action, traffic_density, visibility and scene.",
    "Watch the traffic video frames and answer in JSON only.",
    "A car drives through an intersection while a truck turns left and a pedestrian waits.",
    "The ego vehicle changes lanes on the highway in heavy traffic at night with rain.",
    "A motorcycle speeds past a red traffic light and nearly hits a bus.",
    "Frame1: Frame2: Frame3: Frame4: Frame5: Frame6: Frame7: Frame8:",
)

_EVENT_TYPES = ("collision", "near_miss", "no_incident")
_RULE_VIOLATIONS = ("speeding", "failure_to_yield", "ignoring_traffic_signs")
_ACTIONS = ("turn_left", "turn_right", "change_lanes")
_DENSITIES = ("low", "high")
_VISIBILITY = ("good", "bad")
_SCENES = ("Urban", "Sub-urban", "Rural", "Highway", "unknown")

_GENERIC_TEXT = (
    "The quick brown fox jumps over the lazy dog. Hello world! What is in the picture?",
    "It was a bright cold day in April, and the people of the small town walked to work. "
    "Some of them drove cars, others took the train, the bus or a bicycle. Children played "
    "near the school while their parents talked about the weather, the market and the news.",
    "Please describe what you can see, explain why it matters, and give a short summary. "
    "First look carefully, then think about the details, and finally write a clear answer.",
    "There are many houses, trees, streets, bridges, rivers, boats, people, animals and signs. "
    "The sky is blue and the sun is shining, but dark clouds are coming from the north.",
    "Because the road was wet, the driver slowed down, stopped at the corner and waited for "
    "the light to turn green before moving forward again into the left lane.",
    "This model should learn to follow instructions, reason about images and videos, and "
    "produce valid output that can be parsed by a program without any extra words.",
    "one two three four five six seven eight nine ten first second third last next previous "
    "left right front back top bottom center middle inside outside above below before after",
    "red orange yellow green blue purple black white grey gray brown dark light bright small "
    "large big little long short wide narrow high low fast slow early late new old good bad",
    "time year month week day hour minute second morning evening night today yesterday "
    "tomorrow always never often sometimes usually again still already only also very much",
    "person people man woman child driver pedestrian cyclist vehicle car truck bus van "
    "motorcycle bicycle train road street lane intersection crossing junction traffic light "
    "sign signal stop yield speed limit parking sidewalk roundabout tunnel bridge highway",
    "fire smoke flame burn heat ash plume haze cloud fog rain snow storm wind dust sand water "
    "river lake sea ocean coast beach island mountain hill valley field farm crop grass tree",
    "is are was were be been being have has had do does did will would can could should may "
    "might must shall not and or but if then else when where what which who whom whose why how",
    "system user assistant image video text picture frame question answer reasoning solution",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 25 50 75 100 0.5 1.0 3.14 2024 2025",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z",
    '{ } [ ] ( ) < > " \' : ; , . ! ? - _ / \\ | @ # $ % ^ & * + = ~ `',
    "true false null None []  {}  \n\n  \t",
)


def tokenizer_corpus() -> list[str]:
    """Return the training text for the tiny BPE tokenizers.

    It covers the wildfire GRPO task, the dashcam-video JSON SFT task, and general English,
    so that task text encodes into a few dozen tokens instead of one token per byte.
    """
    corpus = list(_WILDFIRE_SENTENCES) + list(_VIDEO_SENTENCES) + list(_GENERIC_TEXT)
    for index, event in enumerate(_EVENT_TYPES * 4):
        record = {
            "caption": "A car turns at a busy intersection while another car waits.",
            "event_type": event,
            "rule_violations": [_RULE_VIOLATIONS[index % 3]] if event != "no_incident" else [],
            "intended_action": _ACTIONS[index % 3],
            "traffic_density": _DENSITIES[index % 2],
            "visibility": _VISIBILITY[(index // 2) % 2],
            "scene": _SCENES[index % len(_SCENES)],
        }
        corpus.append(json.dumps(record))
        corpus.append(json.dumps(record, indent=2))
    return corpus


def train_bpe(vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen2's pre-tokenizer and return its vocab and merges.

    Starting from the full 256-symbol byte alphabet guarantees any string round-trips.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    model_json = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    return dict(model_json["vocab"]), merges


def build_tokenizer(added: list[tuple[str, bool]], chat_template: str, model_max_length: int, **named_tokens: Any):
    """A Qwen2-style BPE tokenizer with `added` tokens (in the real models' order) and the family's chat template.

    Added tokens get ids right after the BPE vocab and are put in the BPE vocab too, so their ids stay fixed
    across save/load. `named_tokens` (for example `bos_token`, `add_bos_token` or `extra_special_tokens`) pass to
    the tokenizer as they are; Qwen-style tokenizers have no bos token.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = train_bpe(TOKENIZER_VOCAB_SIZE)
    for token, _special in added:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=named_tokens.pop("bos_token", None),
        eos_token=named_tokens.pop("eos_token", "<|im_end|>"),
        pad_token=named_tokens.pop("pad_token", "<|endoftext|>"),
        model_max_length=model_max_length,
        chat_template=chat_template,
        **named_tokens,
    )
    tokenizer.add_tokens([AddedToken(token, special=special, normalized=False) for token, special in added])
    return tokenizer


def padded_vocab_size(tokenizer) -> int:
    """Return len(tokenizer) rounded up to a multiple of VOCAB_MULTIPLE."""
    size = len(tokenizer)
    return -(-size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def generation_config(tokenizer, stop: tuple[str, ...], pad: str, bos: str | None = None):
    """Only the stop, pad and bos ids (bos is the pad token where the family has none): the real checkpoints'
    greedy-ish sampling defaults would silently override trainer settings, so they are left out on purpose."""
    from transformers import GenerationConfig

    pad_id = tokenizer.convert_tokens_to_ids(pad)
    bos_id = tokenizer.convert_tokens_to_ids(bos) if bos else pad_id
    stop_ids = [tokenizer.convert_tokens_to_ids(token) for token in stop]
    return GenerationConfig(bos_token_id=bos_id, eos_token_id=stop_ids, pad_token_id=pad_id)
