"""What a model family row holds: the shape of the family table (`core.families`).

A row is data plus a few pure functions. Everything the product does differently for one family is in its row:
recognising it, its tiny random-weight model, its visual-token arithmetic, its LoRA and QLoRA module patterns,
and its chat-template quirks. Code outside `core/families/` asks the row and never names a family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

# Module-name parts shared by every family in transformers 5: the towers' attention and MLP blocks.
ATTENTION_PARTS = ("attn", "attention", "self_attn")
MLP_PARTS = ("mlp", "feed_forward", "ffn")
VISION_PARTS = ("visual", "vision_tower", "vision_model", "vision_encoder")
# What carries the vision features into the language model, under the names transformers gives it.
PROJECTOR_PARTS = ("multi_modal_projector", "merger", "connector")


@dataclass(frozen=True)
class Preset:
    """A shipped full-size model of a family: its architecture ships with the project, so the estimate works
    offline, and its published parameter count is what the meta-device model must match."""

    model_id: str
    title: str
    published_params: float  # billions, as the model card gives it
    config: Callable[..., Any]  # (tokenizer=None, updates=None) -> the transformers config
    gated: bool = False  # the hub asks for a licence: loading needs HF_TOKEN


class VisualTokens(NamedTuple):
    """Tokens a picture or a clip becomes in the language model, and the patches its vision tower sees."""

    tokens: int
    patches: int
    wrapper_tokens: int = 0  # text the processor writes around them, e.g. InternVL's "Frame1: <img>" and "</img>"


def no_kwargs(*_args) -> dict[str, Any]:
    return {}


def clip_metadata(timestamps: list[float]) -> dict[str, Any]:
    """transformers' video metadata for frames already sampled at `timestamps` (seconds from the clip's start).

    Only times are known here, not the file's frame rate, so the metadata counts on a 1 kHz clock: each frame's
    index is its time in milliseconds, and the window spans `total_num_frames` ms (frames sampled at the centres
    of equal segments, as `core.media.video.sample_times` does). Processors then print and embed the real times,
    and `sampled_fps` is the real rate.

    >>> clip_metadata([0.25, 0.75, 1.25, 1.75])
    {'fps': 1000.0, 'frames_indices': [250, 750, 1250, 1750], 'total_num_frames': 2000}
    """
    indices = [round(t * 1000) for t in timestamps]
    spacing = (indices[-1] - indices[0]) / (len(indices) - 1) if len(indices) > 1 else 1000
    return {"fps": 1000.0, "frames_indices": indices, "total_num_frames": max(1, round(spacing * len(indices)))}


def published_config(config_cls: str, published: dict[str, Any], tokenizer, updates: dict[str, dict[str, Any]] | None,
                     tokens: dict[str, str], bos: str, eos: str, pad: str | None = None):
    """A published architecture as a transformers config (`config_cls` names the class).

    With `tokenizer`, the ids of its special tokens replace the published ones: `tokens` maps top-level config keys
    to tokens, and `bos`, `eos` and `pad` (default `bos`) set the text tower's. Benchmarks and the GPU suite run
    without the hub and tokenise with the tiny model's tokenizer (same chat template and special tokens, a smaller
    vocabulary), so the model must expect that tokenizer's ids. `updates` changes sections of it (`updated`).
    """
    import copy

    import transformers

    values = copy.deepcopy(published)
    if tokenizer is not None:
        ids = token_ids(tokenizer, {**tokens, "bos": bos, "eos": eos, "pad": pad or bos})
        values.update({key: ids[key] for key in tokens})
        values["text_config"].update(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    return getattr(transformers, config_cls)(**updated(values, updates))


def token_ids(tokenizer, names: dict[str, str]) -> dict[str, int]:
    """{key: id} of each named token in `tokenizer`, or a ValueError naming the one it lacks."""
    ids = {}
    for key, token in names.items():
        value = tokenizer.convert_tokens_to_ids(token)
        if value is None or value == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r}")
        ids[key] = value
    return ids


def updated(values: dict[str, Any], updates: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """`values` with `updates` applied per section (`text_config`, `vision_config`, or `config` for the top level)."""
    for section, changes in (updates or {}).items():
        (values if section == "config" else values[section]).update(changes)
    return values


def unchanged(processor: dict[str, Any], _config) -> dict[str, Any]:
    return processor


@dataclass(frozen=True)
class Family:
    """One model family: everything the product does differently for it.

    Attributes:
        key: Short name, also its tiny kind (`tiny:<key>`).
        title: The family's name as people write it.
        model_types: The `model_type` values of its transformers configs.
        presets: Its shipped full-size models.
        model_class: The transformers class name of its image-text-to-text model.
        tiny_tokenizer: () -> the tiny model's tokenizer: local BPE, the family's special tokens and chat template.
        build_tiny: (tokenizer) -> (model, processor), a tiny random-weight model, built with no hub.
        image_tokens: (config, height, width, image_kwargs) -> VisualTokens of one image, by the processor's rules.
        video_tokens: (config, frames, height, width, video_kwargs) -> VisualTokens of one clip; None when the
            family takes no video.
        image_kwargs: (max_pixels) -> the processor kwargs that cap an image at that budget ({} for fixed tiles).
        video_kwargs: (shapes, timestamps) -> the processor kwargs for a batch of clips already sampled: each
            clip's (frames, height, width) and its frames' times in seconds. The processor never samples again
            and never guesses the times (`clip_metadata`).
        processor_classes: Class names of its processors: how a loaded processor finds its row.
        text_model_types: The text tower's `model_type` when the family shares `model_types` with another row
            (InternVL3's Qwen2 and InternVL3.5's Qwen3); empty when `model_types` alone decides.
        vision_parts: Module-name parts of the vision tower.
        projector_parts: Module-name parts of what joins the towers (never LoRA-adapted, kept out of 4-bit).
        attention_parts: Module-name parts of attention blocks, in either tower (the `attention` LoRA toggles).
        mlp_parts: Module-name parts of MLP blocks, in either tower (the `mlp` LoRA toggles).
        kernel_packages: (import name, package name) of the optional kernels its layers run fast with when
            installed (transformers falls back to a slow torch path without them); the run's log says which path.
        system_role: Whether its chat template has a system turn (else the system text joins the first user turn).
        full_size_processor: (processor_config dict, preset config) -> that dict set to the full-size model's
            image processing, for random-weight checkpoints written with the tiny tokenizer.
    """

    key: str
    title: str
    model_types: tuple[str, ...]
    presets: tuple[Preset, ...]
    model_class: str
    tiny_tokenizer: Callable[[], Any]
    build_tiny: Callable[[Any], tuple[Any, Any]]
    image_tokens: Callable[..., VisualTokens]
    video_tokens: Callable[..., VisualTokens] | None
    image_kwargs: Callable[[int], dict[str, Any]] = no_kwargs
    video_kwargs: Callable[[list[tuple[int, int, int]], list[list[float]]], dict[str, Any]] = no_kwargs
    processor_classes: tuple[str, ...] = ()
    text_model_types: tuple[str, ...] = ()
    vision_parts: tuple[str, ...] = VISION_PARTS
    projector_parts: tuple[str, ...] = PROJECTOR_PARTS
    attention_parts: tuple[str, ...] = ATTENTION_PARTS
    mlp_parts: tuple[str, ...] = MLP_PARTS
    kernel_packages: tuple[tuple[str, str], ...] = ()
    system_role: bool = True
    full_size_processor: Callable[[dict[str, Any], Any], dict[str, Any]] = unchanged

    def kernel_line(self) -> str | None:
        """Which path its fast-kernel layers take here, in one line; None for a family without such layers."""
        import importlib.util

        if not self.kernel_packages:
            return None
        names = " and ".join(package for _, package in self.kernel_packages)
        missing = [package for module, package in self.kernel_packages if importlib.util.find_spec(module) is None]
        if not missing:
            return f"kernels: {self.title}'s {names} kernels are installed: the fast path is in use"
        return (f"kernels: {self.title} runs the slow torch path ({', '.join(missing)} not installed; "
                f"`pip install {' '.join(missing)}` on a CUDA machine for the fast one)")

    @property
    def modalities(self) -> tuple[str, ...]:
        return ("image", "video") if self.video_tokens is not None else ("image",)

    def transformers_class(self):
        import transformers

        return getattr(transformers, self.model_class)
