"""The model architectures the project ships with, and where any other model's architecture comes from.

The published config.json numbers of the shipped models live in their family's row (`core.families`): the
pre-launch estimate counts their parameters on the meta device, and the benchmarks build them with random
weights, both with no download and no GPU. Another model id's config comes from a local folder, the Hugging Face cache, or a
download of config.json alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import ConfigError
from core.families import (
    FAMILIES,
    VISION_PARTS,
    Family,
    family_by_key,
    family_of_config,
    generic_notes,
    preset_of,
)
from core.hub import check_model_available
from core.tiny import TINY_PREFIX, resolve_model_name

# How long to wait for the hub when only config.json is missing: a box that is offline says so in seconds.
CONFIG_DOWNLOAD_TIMEOUT_S = 10


class UnknownArchitecture(ValueError):
    """A model whose config cannot be found here. The message says what to download or set (the estimate
    reports it as an EstimateError)."""


def parameter_counts(model) -> dict[str, int]:
    """Total, trainable and per-tower parameter counts (a shared storage is counted once)."""
    seen: set[int] = set()
    total = trainable = vision = 0
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


def full_size_processor_files(kind: str, folder: str | Path, model_id: str | None = None) -> Path:
    """Write a processor for a shipped architecture at its real image processing, with no hub access.

    The tiny model's tokenizer, chat template and special tokens (a smaller BPE vocabulary) are copied, then set to
    the full-size model's image processing by the family's row (InternVL3: 448 px and 256 tokens a frame).
    """
    import json
    import shutil

    from core.tiny import tiny_model_path

    family, preset = random_checkpoint_family(kind, model_id)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for path in tiny_model_path(kind).iterdir():
        # Not the tiny model's own description (config.json, tiny_model.json) or weights: only its processor files.
        if path.is_file() and path.name not in ("config.json", "tiny_model.json") and not path.name.endswith(".safetensors"):
            shutil.copy2(path, folder / path.name)
    config_path = folder / "processor_config.json"
    config_path.write_text(json.dumps(family.full_size_processor(json.loads(config_path.read_text()), preset.config()), indent=2))
    return folder


def random_checkpoint_family(kind: str, model_id: str | None = None):
    """(family, preset) for a tiny kind whose family ships a full-size architecture: the preset `model_id`, else the
    family's first."""
    kinds = [family.key for family in FAMILIES if family.presets]
    if kind not in kinds:
        raise ValueError(f"no full-size architecture for {kind!r}; expected one of {', '.join(kinds)}")
    family = family_by_key(kind)
    if model_id is None:
        return family, family.presets[0]
    preset = next((preset for preset in family.presets if preset.model_id == model_id), None)
    if preset is None:
        raise ValueError(f"{family.title} ships no preset {model_id!r}; it ships {', '.join(p.model_id for p in family.presets)}")
    return family, preset


def write_random_checkpoint(kind: str, folder: str | Path, *, seed: int = 0, device: str | None = None,
                            config_updates: dict[str, dict[str, Any]] | None = None, model_id: str | None = None) -> Path:
    """A model folder of a shipped architecture with random weights, loadable as `model.name=<folder>`.

    For GPU tests and benchmarks with no hub access: the preset `model_id` (default: the first) of the family whose
    tiny kind is `kind` (Qwen2.5-VL-7B-Instruct for `qwen2_5_vl`, InternVL3-8B for `internvl`), bf16 on CUDA, with the processor of
    `full_size_processor_files` and the model's special-token ids set to that tokenizer's. About 16 GB on disk.
    `config_updates` changes the architecture first, for example `{"text_config": {"num_hidden_layers": 1}}`, to
    check the same path on CPU in seconds.
    """
    import torch
    from transformers import AutoProcessor

    family, preset = random_checkpoint_family(kind, model_id)
    folder = full_size_processor_files(kind, folder, model_id)
    tokenizer = AutoProcessor.from_pretrained(folder).tokenizer
    torch.manual_seed(seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_random_model(family.transformers_class(), preset.config(tokenizer, config_updates), device=device, dtype=torch.bfloat16)
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

    shipped = preset_of(name)
    if shipped is not None and revision is None:
        return shipped[1].config()
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


def model_family(model) -> Family | None:
    """The family row of a configured model (`ModelSection`): its config is read as the estimate reads it (shipped,
    tiny, a folder, the cache, or config.json alone); None for a model outside the table or whose config cannot be
    found here (loading the model itself will then say why)."""
    try:
        return family_of_config(architecture_config(model.name, model.revision))
    except (UnknownArchitecture, ValueError, OSError):
        return None


def family_lines(model, modality: str) -> list[str]:
    """What a run's log says about its model's family (`model` is a ModelSection, `modality` what the recipe feeds
    it: "image" or "video"). A tiny model or a shipped preset is answered from the table alone, without loading
    transformers (the UI asks on every form render); any other model from its config.

    Raises:
        ConfigError: One line for a family that takes no such input, or an architecture transformers has no
            image-text class for, naming the families that can.
    """
    able = ", ".join(family.title for family in FAMILIES if modality in family.modalities)
    family = table_family(model.name) if model.revision is None else None
    if family is None:
        try:
            config = architecture_config(model.name, model.revision)
        except (UnknownArchitecture, ValueError, OSError) as err:
            return [f"model family: not known before loading ({err})"]
        family = family_of_config(config)
        if family is None:
            from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

            model_type = getattr(config, "model_type", "?")
            if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
                raise ConfigError(
                    f"model.name: {model.name} (model type {model_type!r}) has no image-text-to-text class in transformers, "
                    f"so it cannot take {modality} input here; supported families: {able}"
                )
            return generic_notes(model_type)
    if modality not in family.modalities:
        raise ConfigError(f"model.name: {family.title} ({model.name}) takes no {modality} input; for {modality} use one of: {able}")
    return [f"model family: {family.title}", *filter(None, [family.kernel_line()])]


def table_family(name: str) -> Family | None:
    """The family of a tiny kind or a shipped preset id, from the table alone; None for any other name."""
    if name.startswith(TINY_PREFIX):
        key = name[len(TINY_PREFIX) :]
        return next((family for family in FAMILIES if family.key == key), None)
    shipped = preset_of(name)
    return shipped[0] if shipped else None
