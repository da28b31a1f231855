"""Streamlit UI: pages that launch the recipes' CLI and read run folders."""
