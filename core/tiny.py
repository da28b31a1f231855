"""Tiny random-weight Qwen2.5-VL and InternVL models, built locally with no download.

The models mirror the architecture, processors, special tokens and chat templates of
``Qwen/Qwen2.5-VL-7B-Instruct`` and ``OpenGVLab/InternVL3-8B-hf`` but have about 0.3 M
parameters, a byte-level BPE tokenizer trained on a small built-in corpus, and
image settings that turn any picture into a handful of tokens. They load with the normal
``from_pretrained(path)`` code, so tests and CPU smoke runs exercise the real code paths.

Usage::

    from core.tiny import resolve_model_name
    path = resolve_model_name("tiny:qwen2_5_vl")  # builds once, then reuses the cache

CLI::

    python -m core.tiny --kind all --out /tmp/tiny
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TINY_KINDS = ("qwen2_5_vl", "internvl")
TINY_PREFIX = "tiny:"

# Bump whenever the builder output changes so stale cached folders are not reused.
BUILDER_VERSION = "2"

_DEFAULT_CACHE_DIR = Path("~/.cache/vlm-playbook/tiny")
_CACHE_DIR_ENV = "VLM_TINY_DIR"

_TOKENIZER_VOCAB_SIZE = 1536
# Text towers are rounded up to a multiple of this so the embedding matrix has a tidy size.
_VOCAB_MULTIPLE = 64

# Qwen2.5 added tokens, in the same order (hence relative ids) as the real tokenizer.
# The flag says whether the real tokenizer marks the token "special" (skipped on decode).
_QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
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

# InternVL3-hf appends these to the Qwen2.5 tokenizer. `<video>` is only a placeholder the
# processor expands into per-frame image tokens; it is kept as one id so it never splits.
_INTERNVL_EXTRA_TOKENS: tuple[tuple[str, bool], ...] = (
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
_INTERNVL_NAMED_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}

# Chat template of Qwen/Qwen2.5-VL-7B-Instruct (chat_template.json), verbatim.
QWEN2_5_VL_CHAT_TEMPLATE = (
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

# Chat template of OpenGVLab/InternVL3-8B-hf (as written by transformers' InternVL converter).
INTERNVL_CHAT_TEMPLATE = (
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

# Shared text-tower shape. head_dim = 64 / 4 = 16, so rotary uses 8 frequency pairs.
_TEXT_HIDDEN = 64
_TEXT_LAYERS = 2
_TEXT_HEADS = 4
_TEXT_KV_HEADS = 2
_TEXT_INTERMEDIATE = 128
# Qwen2.5-VL-7B splits its 64 rotary pairs 16/24/24 over (time, height, width); keep the ratio.
_QWEN_MROPE_SECTION = [2, 3, 3]

_VISION_HIDDEN = 32
_VISION_LAYERS = 2
_VISION_HEADS = 2
_VISION_INTERMEDIATE = 64

# Qwen2.5-VL: 14 px patches merged 2x2, so one text token covers 28x28 px. A 56x56 image gives
# 4 tokens and anything larger is shrunk to at most 112x112 px (16 tokens).
_QWEN_PATCH = 14
_QWEN_MERGE = 2
_QWEN_MIN_PIXELS = 56 * 56
_QWEN_MAX_PIXELS = 112 * 112

# InternVL: every image/frame is resized to 56x56 -> 4x4 patches -> pixel shuffle 0.5 -> 4 tokens.
_INTERNVL_IMAGE_SIZE = 56
_INTERNVL_PATCH = 14
_INTERNVL_DOWNSAMPLE = 0.5
INTERNVL_TOKENS_PER_IMAGE = int((_INTERNVL_IMAGE_SIZE // _INTERNVL_PATCH) ** 2 * _INTERNVL_DOWNSAMPLE**2)
# Text tower and projector init std (the library default is 0.02). At 0.02 a 2-layer, 64-wide tower attends
# almost uniformly for hundreds of steps, and the video learnability test's motion fields stay at chance;
# at 0.06 they are learned in ~500 steps. The vision tower keeps its own 0.02.
_INTERNVL_INIT_STD = 0.06

# InternVL normalises with ImageNet statistics; Qwen2.5-VL with OpenAI CLIP statistics.
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

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


def _tokenizer_corpus() -> list[str]:
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


def _train_bpe(vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen2's pre-tokenizer and return its vocab and merges.

    Starting from the full 256-symbol byte alphabet guarantees any string round-trips.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
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
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    model_json = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    return dict(model_json["vocab"]), merges


def _build_tokenizer(kind: str):
    """Build the Qwen2 tokenizer (with the kind's added tokens and chat template).

    Added tokens get ids right after the BPE vocab, in the real models' order, and are put in
    the BPE vocab too so their ids stay fixed across save/load.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _train_bpe(_TOKENIZER_VOCAB_SIZE)
    added = list(_QWEN_ADDED_TOKENS)
    extra_kwargs: dict = {}
    if kind == "internvl":
        added += list(_INTERNVL_EXTRA_TOKENS)
        extra_kwargs["extra_special_tokens"] = dict(_INTERNVL_NAMED_TOKENS)
        chat_template = INTERNVL_CHAT_TEMPLATE
        model_max_length = 8192
    else:
        chat_template = QWEN2_5_VL_CHAT_TEMPLATE
        model_max_length = 131072
    for token, _special in added:
        vocab[token] = len(vocab)

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=model_max_length,
        chat_template=chat_template,
        **extra_kwargs,
    )
    tokenizer.add_tokens([AddedToken(token, special=special, normalized=False) for token, special in added])
    return tokenizer


def _padded_vocab_size(tokenizer) -> int:
    """Return len(tokenizer) rounded up to a multiple of _VOCAB_MULTIPLE."""
    size = len(tokenizer)
    return -(-size // _VOCAB_MULTIPLE) * _VOCAB_MULTIPLE


def _build_qwen2_5_vl(tokenizer):
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
        "vocab_size": _padded_vocab_size(tokenizer),
        "hidden_size": _TEXT_HIDDEN,
        "intermediate_size": _TEXT_INTERMEDIATE,
        "num_hidden_layers": _TEXT_LAYERS,
        "num_attention_heads": _TEXT_HEADS,
        "num_key_value_heads": _TEXT_KV_HEADS,
        "max_position_embeddings": 128000,
        "max_window_layers": _TEXT_LAYERS,
        "use_sliding_window": False,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": _QWEN_MROPE_SECTION},
        "bos_token_id": token_id("<|endoftext|>"),
        "eos_token_id": token_id("<|im_end|>"),
        "pad_token_id": token_id("<|endoftext|>"),
    }
    vision_config = {
        "depth": _VISION_LAYERS,
        "hidden_size": _VISION_HIDDEN,
        "intermediate_size": _VISION_INTERMEDIATE,
        "num_heads": _VISION_HEADS,
        "hidden_act": "silu",
        "patch_size": _QWEN_PATCH,
        "spatial_merge_size": _QWEN_MERGE,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "window_size": 112,
        # The real model mixes windowed and full attention; the last block is full here.
        "fullatt_block_indexes": [_VISION_LAYERS - 1],
        "out_hidden_size": _TEXT_HIDDEN,
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
        size={"shortest_edge": _QWEN_MIN_PIXELS, "longest_edge": _QWEN_MAX_PIXELS},
        patch_size=_QWEN_PATCH,
        temporal_patch_size=2,
        merge_size=_QWEN_MERGE,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    image_processor = Qwen2VLImageProcessor(**vision_geometry)
    video_processor = Qwen2VLVideoProcessor(**vision_geometry)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    return model, processor


def _build_internvl(tokenizer):
    """Return (model, processor) shaped like InternVL3-8B-hf, but tiny."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    token_id = tokenizer.convert_tokens_to_ids
    text_config = Qwen2Config(
        vocab_size=_padded_vocab_size(tokenizer),
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=_TEXT_INTERMEDIATE,
        num_hidden_layers=_TEXT_LAYERS,
        num_attention_heads=_TEXT_HEADS,
        num_key_value_heads=_TEXT_KV_HEADS,
        max_position_embeddings=32768,
        max_window_layers=_TEXT_LAYERS,
        use_sliding_window=False,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=token_id("<|endoftext|>"),
        eos_token_id=token_id("<|im_end|>"),
        pad_token_id=token_id("<|endoftext|>"),
        tie_word_embeddings=False,
        initializer_range=_INTERNVL_INIT_STD,
    )
    vision_config = InternVLVisionConfig(
        hidden_size=_VISION_HIDDEN,
        num_hidden_layers=_VISION_LAYERS,
        num_attention_heads=_VISION_HEADS,
        intermediate_size=_VISION_INTERMEDIATE,
        image_size=_INTERNVL_IMAGE_SIZE,
        patch_size=_INTERNVL_PATCH,
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
        image_seq_length=INTERNVL_TOKENS_PER_IMAGE,
        downsample_ratio=_INTERNVL_DOWNSAMPLE,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    model = InternVLForConditionalGeneration(config)

    square = {"height": _INTERNVL_IMAGE_SIZE, "width": _INTERNVL_IMAGE_SIZE}
    # No dynamic tiling: one 56x56 tile per image keeps every image at a fixed token count.
    image_processor = GotOcr2ImageProcessor(
        size=square,
        crop_to_patches=False,
        min_patches=1,
        max_patches=1,
        image_mean=_IMAGENET_MEAN,
        image_std=_IMAGENET_STD,
    )
    video_processor = InternVLVideoProcessor(size=square, image_mean=_IMAGENET_MEAN, image_std=_IMAGENET_STD)
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=INTERNVL_TOKENS_PER_IMAGE,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    return model, processor


def _check_kind(kind: str) -> None:
    """Raise ValueError unless kind is one of TINY_KINDS."""
    if kind not in TINY_KINDS:
        raise ValueError(f"Unknown tiny model kind {kind!r}; expected one of {', '.join(TINY_KINDS)}.")


def build_tiny_model(kind: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build a tiny random-weight model and save it with its processor.

    Args:
        kind: One of TINY_KINDS.
        out_dir: Folder to write (created if missing; existing files are overwritten).
        seed: Seed for the random weights.

    Returns:
        The folder, loadable with ``AutoModelForImageTextToText`` and ``AutoProcessor``.
    """
    _check_kind(kind)
    import torch
    from transformers import GenerationConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(kind)
    torch.manual_seed(seed)
    builder = _build_qwen2_5_vl if kind == "qwen2_5_vl" else _build_internvl
    model, processor = builder(tokenizer)

    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # Only the stop/pad ids; the real checkpoints' greedy-ish sampling defaults would
    # silently override trainer settings, so they are left out on purpose.
    model.generation_config = GenerationConfig(
        bos_token_id=end_of_text,
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), end_of_text],
        pad_token_id=end_of_text,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "tiny_model.json").write_text(
        json.dumps({"kind": kind, "builder_version": BUILDER_VERSION, "seed": seed}, indent=2) + "\n"
    )
    return out_dir


def tiny_cache_dir() -> Path:
    """Return the cache root: $VLM_TINY_DIR, else ~/.cache/vlm-playbook/tiny."""
    root = os.environ.get(_CACHE_DIR_ENV)
    return Path(root).expanduser() if root else _DEFAULT_CACHE_DIR.expanduser()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on path, where the platform supports one."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename below still prevents half-built folders.
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_readable(folder: Path) -> None:
    """Open a built folder to other users (mkdtemp and the weight writer create it owner-only).

    The cache holds random weights only, and a shared cache may be read by another account
    (for example the app container and a CLI run as different users).
    """
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def tiny_model_path(kind: str) -> Path:
    """Return the cached folder of a tiny model, building it on first use.

    The build goes to a temporary folder that is renamed into place, so other processes never
    see a half-written model; a file lock avoids duplicate builds, and if another process still
    wins the race its folder is kept and ours discarded.
    """
    _check_kind(kind)
    root = tiny_cache_dir()
    target = root / f"{kind}-v{BUILDER_VERSION}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{kind}-v{BUILDER_VERSION}.lock"):
        if (target / "config.json").is_file():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{kind}-building-", dir=root))
        try:
            build_tiny_model(kind, staging)
            _make_readable(staging)
            try:
                os.rename(staging, target)
            except OSError:
                if not (target / "config.json").is_file():
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_name(name: str) -> str:
    """Map ``tiny:<kind>`` to a local tiny-model folder; return any other name unchanged.

    Raises:
        ValueError: If name starts with ``tiny:`` but the kind is unknown.
    """
    if not name.startswith(TINY_PREFIX):
        return name
    kind = name[len(TINY_PREFIX) :]
    if kind not in TINY_KINDS:
        allowed = ", ".join(TINY_PREFIX + k for k in TINY_KINDS)
        raise ValueError(f"Unknown tiny model {name!r}; expected one of {allowed}.")
    return str(tiny_model_path(kind))


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: build tiny models into --out, or into the cache when --out is omitted."""
    parser = argparse.ArgumentParser(prog="python -m core.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=(*TINY_KINDS, "all"), default="all")
    parser.add_argument(
        "--out", type=Path, help="Output folder (with --kind all: one sub-folder per kind). Default: the cache."
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    kinds = TINY_KINDS if args.kind == "all" else (args.kind,)
    for kind in kinds:
        if args.out is None:
            path = tiny_model_path(kind)
        else:
            path = build_tiny_model(kind, args.out / kind if args.kind == "all" else args.out, seed=args.seed)
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
