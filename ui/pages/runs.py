"""Runs: every run folder, started from the UI or the command line, with its details and controls."""

import streamlit as st

from ui.components import ensure_router
from ui.runs_page import runs_overview

ensure_router("runs")

st.title("Runs")
runs_overview()
