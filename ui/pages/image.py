"""Image VLM: Qwen2.5-VL learns to spot wildfires in satellite tiles with GRPO."""

import streamlit as st

from ui.compare import compare_panel
from ui.components import ensure_router
from ui.evaluation import evaluation_panel
from ui.recipes import IMAGE
from ui.training import training_panel

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
