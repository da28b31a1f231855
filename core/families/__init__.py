"""The model family table: the only place that knows a model family.

Each row (`core.families.base.Family`, one module per family) says how to recognise the family (its configs'
`model_type`), builds its tiny random-weight model, counts its visual tokens by its processor's rules, names the
modules behind the LoRA toggles and the ones QLoRA keeps out of 4-bit, and holds its chat-template quirks. The
estimate, the tiny models, LoRA, QLoRA, the collator and the random full-size checkpoints all ask this table.

The rows: Qwen2.5-VL, InternVL3, Qwen3-VL, InternVL3.5 (InternVL3's row with a Qwen3 text tower, in the same
module), SmolVLM2, Gemma 3 (images only), Qwen3.5 and Gemma 4. Their order is the tiny kinds' order.

A model outside the table still trains when transformers' Auto classes load it (`generic_notes` says what that
means); only the estimate needs its row.
"""

from __future__ import annotations

from core.families import gemma3, gemma4, internvl, qwen2_5_vl, qwen3_5, qwen3_vl, smolvlm2
from core.families.base import (
    ATTENTION_PARTS,
    MLP_PARTS,
    PROJECTOR_PARTS,
    VISION_PARTS,
    Family,
    Preset,
    VisualTokens,
)

FAMILIES: tuple[Family, ...] = (
    qwen2_5_vl.FAMILY,
    internvl.FAMILY,
    qwen3_vl.FAMILY,
    internvl.FAMILY_3_5,
    smolvlm2.FAMILY,
    gemma3.FAMILY,
    qwen3_5.FAMILY,
    gemma4.FAMILY,
)

__all__ = [
    "ATTENTION_PARTS", "FAMILIES", "MLP_PARTS", "PROJECTOR_PARTS", "VISION_PARTS", "Family", "Preset", "VisualTokens",
    "family_by_key", "family_of_config", "family_of_processor", "generic_notes", "preset_of", "shipped_presets",
]


def family_by_key(key: str) -> Family:
    """The row whose key (tiny kind) is `key`, or a ValueError listing them."""
    for family in FAMILIES:
        if family.key == key:
            return family
    raise ValueError(f"unknown model family {key!r}; expected one of {', '.join(f.key for f in FAMILIES)}")


def family_of_config(config) -> Family | None:
    """The row of a transformers config, by its `model_type` (and its text tower's, where rows share one); None for a
    model outside the table."""
    model_type = getattr(config, "model_type", None)
    text_type = getattr(getattr(config, "text_config", None), "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types and (not family.text_model_types or text_type in family.text_model_types):
            return family
    return None


def family_of_processor(processor) -> Family | None:
    """The row of a loaded processor, by its class; None for a processor outside the table."""
    name = type(processor).__name__
    return next((family for family in FAMILIES if name in family.processor_classes), None)


def shipped_presets() -> dict[str, tuple[Family, Preset]]:
    """Every shipped full-size model id, with its family and preset."""
    return {preset.model_id: (family, preset) for family in FAMILIES for preset in family.presets}


def preset_of(model_id: str) -> tuple[Family, Preset] | None:
    return shipped_presets().get(model_id)


def generic_notes(model_type: str) -> list[str]:
    """What changes for a model outside the table, for its run log and the UI: which parts are generic."""
    known = ", ".join(family.title for family in FAMILIES)
    return [
        f"model family: {model_type!r} is not in the family table ({known}); it trains through transformers' Auto "
        "classes with generic handling:",
        "  - LoRA: the four toggles fall back to every linear layer of the language model (vision tower and projector left out)",
        "  - QLoRA: every known family's vision tower and projector names stay out of 4-bit",
        "  - prompts: the processor's own chat template, image and video kwargs at its defaults",
        "  - the memory estimate cannot be made for it",
    ]
