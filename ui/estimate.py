"""The memory estimate beside Start: will this config fit, where does the memory go, and what would make it fit.

The form has no submit step (ui/form.py), so the estimate is always of the values on screen: it is never stale.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import pandas as pd
import streamlit as st

from ui.recipes import RECIPES, Recipe

# Below this share of usable memory left free, the verdict turns amber: it fits, but a longer sample may not.
TIGHT_HEADROOM = 0.15
# The usage bar's colours, by verdict (Streamlit's own palette, so it matches the verdict's background).
BAR_COLOURS = {"green": "#21c354", "orange": "#ffa421", "red": "#ff4b4b"}


@st.cache_data(show_spinner="Estimating memory…", max_entries=64)
def cached_estimate(recipe_name: str, config_json: str) -> dict[str, Any]:
    """The recipe's estimate of one config as JSON, or {"error": why} for a model it cannot estimate."""
    recipe = RECIPES[recipe_name]
    cfg = recipe.config_cls.model_validate_json(config_json)
    try:
        result = importlib.import_module(recipe.estimate_module).estimate(cfg)
    except Exception as err:  # noqa: BLE001 - the estimate is advice: it never blocks the form
        return {"error": str(err)}
    return result.to_json()


def estimate_for(recipe: Recipe, cfg) -> dict[str, Any] | None:
    return cached_estimate(recipe.name, cfg.model_dump_json()) if cfg is not None else None


def verdict(estimate: dict[str, Any]) -> tuple[str, str]:
    """(colour, one line) for the estimate: green fits with room, orange fits tightly, red does not fit.

    >>> verdict({"fits": False, "peak_memory_gib": 31.3, "usable_memory_gib": 22.4, "device": "rtx-4090", "headroom_gib": -8.9})[0]
    'red'
    >>> verdict({"fits": True, "peak_memory_gib": 21.8, "usable_memory_gib": 100.0, "device": "cap", "headroom_gib": 78.2})[0]
    'green'
    """
    peak, usable = estimate["peak_memory_gib"], estimate["usable_memory_gib"]
    where = f"{peak:.1f} GiB of {usable:.1f} GiB usable on {estimate['device']}"
    if not estimate["fits"]:
        return "red", f"Will not fit: {where} ({estimate['headroom_gib']:+.1f} GiB)"
    if estimate["headroom_gib"] < TIGHT_HEADROOM * usable:
        return "orange", f"Fits tightly: {where} ({estimate['headroom_gib']:+.1f} GiB headroom)"
    return "green", f"Fits: {where} ({estimate['headroom_gib']:+.1f} GiB headroom)"


def usage_bar(share: float, colour: str) -> str:
    """The peak as a share of usable memory, as a bar in the verdict's colour (st.progress has one colour).

    >>> 'width:100%' in usage_bar(1.75, "red") and '#ff4b4b' in usage_bar(1.75, "red")
    True
    """
    width = max(0.0, min(1.0, share)) * 100
    return (
        '<div style="background:rgba(151,166,195,0.25);border-radius:4px;height:10px;margin:2px 0 4px 0">'
        f'<div style="width:{width:.0f}%;background:{BAR_COLOURS[colour]};height:10px;border-radius:4px"></div></div>'
    )


def advice_lines(advice: list[str], label) -> list[str]:
    """The estimate's advice (`key=value (peak X GiB)`, or several changes `together`) in the form's words;
    `label(key)` names a field.

    >>> advice_lines(["model.dtype=bfloat16 (peak 67.7 GiB)"], lambda key: "Weight dtype")
    ['**Weight dtype** → bfloat16 (`model.dtype=bfloat16`): peak 67.7 GiB']
    >>> advice_lines(["a=1 b=2 together (peak 9.0 GiB)"], str.upper)
    ['**A** → 1 and **B** → 2, together (`a=1 b=2`): peak 9.0 GiB']
    """
    lines = []
    for item in advice:
        match = re.fullmatch(r"(?P<changes>.+?)(?P<together> together)? \(peak (?P<peak>[\d.]+) GiB\)", item)
        if not match:
            lines.append(item)
            continue
        changes = match["changes"].split()
        words = " and ".join(f"**{label(key)}** → {value}" for key, _, value in (c.partition("=") for c in changes))
        together = ", together" if match["together"] else ""
        lines.append(f"{words}{together} (`{' '.join(changes)}`): peak {match['peak']} GiB")
    return lines


def estimate_panel(estimate: dict[str, Any] | None, problem: str | None = None,
                   model_problem: str | None = None) -> None:
    """Peak memory against the device, coloured by headroom, with the changes that would make it fit, the parts and
    the token counts."""
    from ui.form import field_label

    st.markdown("**Memory estimate**")
    if estimate is None:
        st.caption(f"No estimate: {problem}" if problem else "No estimate for these values.")
        return
    if "error" in estimate:
        if model_problem:
            st.caption("No estimate: the model cannot be loaded (see the Model field).")
        else:
            st.caption(f"No estimate for this model ({estimate['error']}); it trains all the same.")
        return
    colour, line = verdict(estimate)
    st.markdown(f":{colour}-background[{line}]")
    share = estimate["peak_memory_gib"] / max(estimate["usable_memory_gib"], 1e-9)
    st.markdown(usage_bar(share, colour), unsafe_allow_html=True)
    st.caption(
        f"peak {share:.0%} of usable memory · {estimate['params_trainable']:,} of {estimate['params_total']:,} "
        f"parameters trained · {estimate['sequence_tokens']:,} tokens per sample, "
        f"{estimate['visual_tokens_per_sample']:,} visual"
    )
    if estimate.get("advice"):
        lines = advice_lines(estimate["advice"], field_label)
        st.markdown("To fit, change one of these:\n" + "\n".join(f"- {line}" for line in lines))
    elif not estimate["fits"]:
        st.markdown("No small change is enough: use a machine with more memory, fewer trainable layers or shorter "
                    "samples.")
    with st.expander("Where the memory goes"):
        parts = {name: value for name, value in estimate["parts_gib"].items() if value > 0}
        st.bar_chart(pd.DataFrame({"GiB": parts}), horizontal=True)
        st.caption(f"device: {estimate.get('device_source', estimate['device'])}")
        for note in estimate.get("notes", []):
            st.caption(note)
