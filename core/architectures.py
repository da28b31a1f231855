"""The model architectures the project ships with, and where any other model's architecture comes from.

The published config.json numbers of the two shipped models are written here once: the pre-launch estimate
counts their parameters on the meta device, and the benchmarks build them with random weights, both with no
download and no GPU. Another model id's config comes from a local folder, the Hugging Face cache, or a
download of config.json alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import ConfigError
from core.hub import check_model_available
from core.tiny import TINY_PREFIX, resolve_model_name

QWEN2_5_VL_7B_ID = "Qwen/Qwen2.5-VL-7B-Instruct"
INTERNVL3_8B_ID = "OpenGVLab/InternVL3-8B-hf"
# How long to wait for the hub when only config.json is missing: a box that is offline says so in seconds.
CONFIG_DOWNLOAD_TIMEOUT_S = 10


class UnknownArchitecture(ValueError):
    """A model whose config cannot be found here. The message says what to download or set (the estimate
    reports it as an EstimateError)."""


def parameter_counts(model) -> dict[str, int]:
    """Total, trainable and per-tower parameter counts (a shared storage is counted once)."""
    seen: set[int] = set()
    total = trainable = vision = 0
    from core.models import VISION_PARTS

    for name, param in model.named_parameters():
        key = id(param)
        if key in seen:
            continue
        seen.add(key)
        count = param.numel()
        total += count
        if param.requires_grad:
            trainable += count
        if any(part in name.split(".") for part in VISION_PARTS):
            vision += count
    return {"total": total, "trainable": trainable, "vision": vision, "language_and_projector": total - vision}


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


def _token_ids(tokenizer, names: dict[str, str]) -> dict[str, int]:
    ids = {}
    for key, token in names.items():
        value = tokenizer.convert_tokens_to_ids(token)
        if value is None or value == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r}")
        ids[key] = value
    return ids


def _updated(values: dict[str, Any], updates: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """`values` with `updates` applied per section (`text_config`, `vision_config`, or `config` for the top level)."""
    for section, changes in (updates or {}).items():
        (values if section == "config" else values[section]).update(changes)
    return values


def qwen2_5_vl_7b_config(tokenizer=None, updates: dict[str, dict[str, Any]] | None = None):
    """Qwen2.5-VL-7B's architecture; with `tokenizer`, its special-token ids are used instead of the published ones.

    The benchmarks run without hub access, so prompts are tokenised by the tiny model's tokenizer (same chat
    template and special tokens, smaller BPE vocabulary); the model must then expect that tokenizer's ids.
    """
    import copy

    from transformers import Qwen2_5_VLConfig

    values = copy.deepcopy(QWEN2_5_VL_7B)
    if tokenizer is not None:
        ids = _token_ids(
            tokenizer,
            {
                "image_token_id": "<|image_pad|>",
                "video_token_id": "<|video_pad|>",
                "vision_start_token_id": "<|vision_start|>",
                "vision_end_token_id": "<|vision_end|>",
                "bos": "<|endoftext|>",
                "eos": "<|im_end|>",
            },
        )
        values.update({k: v for k, v in ids.items() if k.endswith("_token_id")})
        values["text_config"].update(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["bos"])
    return Qwen2_5_VLConfig(**_updated(values, updates))


def internvl3_8b_config(tokenizer=None, updates: dict[str, dict[str, Any]] | None = None):
    """InternVL3-8B-hf's architecture; with `tokenizer`, its `<IMG_CONTEXT>` and end ids replace the published ones.

    `updates` changes sections of it (as in `qwen2_5_vl_7b_config`), for a smaller model of the same shape.
    """
    import copy

    from transformers import InternVLConfig

    values = copy.deepcopy(INTERNVL3_8B)
    if tokenizer is not None:
        ids = _token_ids(tokenizer, {"image_token_id": "<IMG_CONTEXT>", "bos": "<|endoftext|>", "eos": "<|im_end|>"})
        values["image_token_id"] = ids["image_token_id"]
        values["text_config"].update(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["bos"])
    return InternVLConfig(**_updated(values, updates))


def build_random_model(model_cls, config, *, device: str | None = None, dtype=None, attn_implementation: str | None = None):
    """A model of `config`'s architecture with random weights, created directly where it will run.

    On CUDA the parameters are allocated and initialised on the GPU in bf16 (no host copy, no download, a few
    seconds for 8B parameters). `device="meta"` builds it without memory, for parameter counts.
    """
    import copy

    import torch

    config = copy.deepcopy(config)  # _from_config writes dtype and attention choice into the config it gets
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    with torch.device(device):
        model = model_cls._from_config(config, **kwargs)
    if device != "meta":
        model.to(device)
    return model


def meta_parameter_counts(model_cls, config) -> dict[str, int]:
    """Parameter counts of an architecture without allocating it (works on CPU for 8B models)."""
    counts = parameter_counts(build_random_model(model_cls, config, device="meta"))
    counts.pop("trainable")  # before LoRA every weight is trainable: not a useful figure
    return counts


SHIPPED_CONFIGS = {QWEN2_5_VL_7B_ID: qwen2_5_vl_7b_config, INTERNVL3_8B_ID: internvl3_8b_config}

# The shipped architectures a random-weight checkpoint can be written of, by the tiny kind that lends its tokenizer.
RANDOM_CHECKPOINT_KINDS = ("qwen2_5_vl", "internvl")


def full_size_processor_files(kind: str, folder: str | Path) -> Path:
    """Write a processor for a shipped architecture at its real image processing, with no hub access.

    The tiny model's tokenizer, chat template and special tokens (a smaller BPE vocabulary) are copied, then set to
    the full-size model's image processing: InternVL3 at 448 px and 256 tokens a frame. Qwen2.5-VL's 14 px patches
    and 2x2 merge are already the tiny one's, and the recipe sets its pixel budget when it loads the processor.
    """
    import json
    import shutil

    from core.tiny import tiny_model_path

    if kind not in RANDOM_CHECKPOINT_KINDS:
        raise ValueError(f"no full-size architecture for {kind!r}; expected one of {', '.join(RANDOM_CHECKPOINT_KINDS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for path in tiny_model_path(kind).iterdir():
        # Not the tiny model's own description (config.json, tiny_model.json) or weights: only its processor files.
        if path.is_file() and path.name not in ("config.json", "tiny_model.json") and not path.name.endswith(".safetensors"):
            shutil.copy2(path, folder / path.name)
    if kind == "internvl":
        config_path = folder / "processor_config.json"
        config = json.loads(config_path.read_text())
        size = INTERNVL3_8B["vision_config"]["image_size"]
        config["image_seq_length"] = INTERNVL3_8B["image_seq_length"]
        for key in ("image_processor", "video_processor"):
            config[key]["size"] = {"height": size, "width": size}
        config_path.write_text(json.dumps(config, indent=2))
    return folder


def write_random_checkpoint(kind: str, folder: str | Path, *, seed: int = 0, device: str | None = None, config_updates: dict[str, dict[str, Any]] | None = None) -> Path:
    """A model folder of a shipped architecture with random weights, loadable as `model.name=<folder>`.

    For GPU tests and benchmarks with no hub access: Qwen2.5-VL-7B-Instruct (`kind="qwen2_5_vl"`) or InternVL3-8B
    (`"internvl"`), bf16 on CUDA, with the processor of `full_size_processor_files` and the model's special-token ids
    set to that tokenizer's. About 16 GB on disk. `config_updates` changes the architecture first, for example
    `{"text_config": {"num_hidden_layers": 1}}`, to check the same path on CPU in seconds.
    """
    import torch
    from transformers import AutoProcessor, InternVLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration

    folder = full_size_processor_files(kind, folder)
    tokenizer = AutoProcessor.from_pretrained(folder).tokenizer
    if kind == "qwen2_5_vl":
        model_cls, config = Qwen2_5_VLForConditionalGeneration, qwen2_5_vl_7b_config(tokenizer, config_updates)
    else:
        model_cls, config = InternVLForConditionalGeneration, internvl3_8b_config(tokenizer, config_updates)
    torch.manual_seed(seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_random_model(model_cls, config, device=device, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def architecture_config(name: str, revision: str | None = None):
    """The transformers config of `name`: a shipped id, `tiny:<kind>`, a local folder, or a hub id.

    A hub id is read from the Hugging Face cache, else only its config.json is downloaded (no weights).

    Raises:
        UnknownArchitecture: offline and not cached, no such repository, or a folder without config.json.
    """
    from transformers import AutoConfig

    if name in SHIPPED_CONFIGS and revision is None:
        return SHIPPED_CONFIGS[name]()
    if name.startswith(TINY_PREFIX):
        return AutoConfig.from_pretrained(resolve_model_name(name))
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UnknownArchitecture(f"{folder}: no config.json in this model folder")
        return AutoConfig.from_pretrained(folder)
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise UnknownArchitecture(f"model.name {name!r}: no such folder, and not a hub id of the form owner/name")
    return AutoConfig.from_pretrained(hub_config_file(name, revision).parent)


def hub_config_file(name: str, revision: str | None = None) -> Path:
    """config.json of a hub model: from the cache when it is there, else downloaded alone, within seconds."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json", revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    fetch = f"`hf download {name} config.json`" + (f" with --revision {revision}" if revision else "")
    try:
        check_model_available(name, revision)  # offline, unknown, gated or unreachable: one line, in seconds
        return Path(hf_hub_download(name, "config.json", revision=revision, etag_timeout=CONFIG_DOWNLOAD_TIMEOUT_S))
    except ConfigError as err:
        raise UnknownArchitecture(f"{err} (the estimate needs only its config.json: {fetch})") from None
    except OSError as err:  # connection errors come in several types, all meaning "cannot reach the hub"
        raise UnknownArchitecture(f"{name}: config.json could not be downloaded ({type(err).__name__}); run {fetch} where the hub is reachable") from None


def meta_model(config):
    """An empty (meta-device) model of `config`'s architecture: shapes and names, no memory, no weights."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
