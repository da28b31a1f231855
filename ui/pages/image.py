"""Image VLM: Qwen2.5-VL learns to spot wildfires in satellite tiles with GRPO."""

import streamlit as st

from ui.components import compare_panel, ensure_router, evaluation_panel, training_panel
from ui.recipes import IMAGE

ensure_router("image")
st.title("Image VLM: wildfire detection")
st.caption(
    "Qwen2.5-VL learns with GRPO to answer `<REASONING>…</REASONING><SOLUTION>Yes|No</SOLUTION>` "
    "for satellite tiles; rewards score the format and the answer."
)

train, compare, evaluate = st.tabs(["Train", "Compare", "Evaluate"])
with train:
    training_panel(IMAGE)
with compare:
    compare_panel(IMAGE)
with evaluate:
    evaluation_panel(IMAGE)
