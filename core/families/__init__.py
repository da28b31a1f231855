"""The model family table: the only place that knows a model family.

Each row (`core.families.base.Family`, one module per family) says how to recognise the family (its configs'
`model_type`), builds its tiny random-weight model, counts its visual tokens by its processor's rules, names the
modules behind the LoRA toggles and the ones QLoRA keeps out of 4-bit, and holds its chat-template quirks. The
estimate, the tiny models, LoRA, QLoRA, the collator and the random full-size checkpoints all ask this table.

A model outside the table still trains when transformers' Auto classes load it (`generic_notes` says what that
means); only the estimate needs its row.
"""

from __future__ import annotations

from core.families import internvl, qwen2_5_vl
from core.families.base import ATTENTION_PARTS, MLP_PARTS, PROJECTOR_PARTS, VISION_PARTS, Family, Preset, VisualTokens

FAMILIES: tuple[Family, ...] = (qwen2_5_vl.FAMILY, internvl.FAMILY)

__all__ = [
    "ATTENTION_PARTS", "FAMILIES", "MLP_PARTS", "PROJECTOR_PARTS", "VISION_PARTS", "Family", "Preset", "VisualTokens",
    "family_by_key", "family_of_config", "preset_of", "shipped_presets",
]


def family_by_key(key: str) -> Family:
    """The row whose key (tiny kind) is `key`, or a ValueError listing them."""
    for family in FAMILIES:
        if family.key == key:
            return family
    raise ValueError(f"unknown model family {key!r}; expected one of {', '.join(f.key for f in FAMILIES)}")


def family_of_config(config) -> Family | None:
    """The row of a transformers config, by its `model_type`; None for a model outside the table."""
    model_type = getattr(config, "model_type", None)
    return next((family for family in FAMILIES if model_type in family.model_types), None)


def shipped_presets() -> dict[str, tuple[Family, Preset]]:
    """Every shipped full-size model id, with its family and preset."""
    return {preset.model_id: (family, preset) for family in FAMILIES for preset in family.presets}


def preset_of(model_id: str) -> tuple[Family, Preset] | None:
    return shipped_presets().get(model_id)
