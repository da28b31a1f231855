"""The memory estimate beside Start: will this config fit, and where does the memory go."""

from __future__ import annotations

import importlib
from typing import Any

import pandas as pd
import streamlit as st

from ui.recipes import RECIPES, Recipe

# Below this share of usable memory left free, the verdict turns amber: it fits, but a longer sample may not.
TIGHT_HEADROOM = 0.15


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


def estimate_panel(estimate: dict[str, Any] | None, problem: str | None = None) -> None:
    """Peak memory against the device, coloured by headroom, with the parts and the token counts underneath."""
    st.markdown("**Memory estimate**")
    if estimate is None:
        st.caption(f"No estimate: {problem}" if problem else "No estimate for these values.")
        return
    if "error" in estimate:
        st.caption(f"No estimate for this model ({estimate['error']}); it trains all the same.")
        return
    colour, line = verdict(estimate)
    st.markdown(f":{colour}-background[{line}]")
    share = estimate["peak_memory_gib"] / max(estimate["usable_memory_gib"], 1e-9)
    st.progress(min(1.0, share), text=f"peak {share:.0%} of usable memory")
    st.caption(
        f"{estimate['params_trainable']:,} of {estimate['params_total']:,} parameters trained · "
        f"{estimate['sequence_tokens']:,} tokens per sample, {estimate['visual_tokens_per_sample']:,} visual · "
        "for the values last applied: press Update estimate after editing"
    )
    if estimate.get("advice"):
        st.caption("To fit, set " + " or ".join(estimate["advice"]))
    with st.expander("Where the memory goes"):
        parts = {name: value for name, value in estimate["parts_gib"].items() if value > 0}
        st.bar_chart(pd.DataFrame({"GiB": parts}), horizontal=True)
        for note in estimate.get("notes", []):
            st.caption(note)
