"""What every page does first: make sure it runs under `ui/app.py`'s router.

The pages themselves live in ui/pages/; what they show lives in modules named for it: the Train tab in
ui/training.py, the live run in ui/run_view.py, the Runs page in ui/runs_page.py, Compare and Evaluate in
ui/compare.py and ui/evaluation.py.
"""

from __future__ import annotations

import streamlit as st

ROUTER_FLAG = "vlm:router"


def ensure_router(page: str) -> None:
    """Send a page that runs outside `ui/app.py`'s router back through it (asking for `page`).

    A `pages/` folder next to the main script makes Streamlit run the very first page request of a fresh
    server in its legacy multipage mode, where `/video` runs `pages/video.py` alone: without the router's
    page selection (VLM_PAGE) and layout. The router marks the session; an unmarked page goes to the router.
    """
    if not st.session_state.get(ROUTER_FLAG):
        st.switch_page("app.py", query_params={"page": page})
