"""Video VLM: InternVL3 learns to describe dashcam clips as one JSON object (supervised fine-tuning)."""

import streamlit as st

from ui.compare import compare_panel
from ui.components import ensure_router
from ui.evaluation import evaluation_panel
from ui.recipes import VIDEO
from ui.training import training_panel

ensure_router("video")
st.title("Video VLM: dashcam clips to JSON")
st.caption(
    "InternVL3 is fine-tuned (SFT) to answer with one JSON object whose fields come from the schema: "
    "event type, rule violations, intended action, traffic, visibility, scene and a caption."
)

train, compare, evaluate = st.tabs(["Train", "Compare", "Evaluate"])
with train:
    training_panel(VIDEO)
with compare:
    compare_panel(VIDEO)
with evaluate:
    evaluation_panel(VIDEO)
