"""The Streamlit app: a router over the Image VLM, Video VLM and Runs pages.

    streamlit run ui/app.py                 # every page (make ui)
    VLM_PAGE=image streamlit run ui/app.py  # one recipe's page plus Runs (the image-vlm container)

The pages launch the recipes' command lines and read run folders; nothing trains inside this process.
With VLM_UI_PASSWORD set, a browser session sees only a password form until it gives that password (ui/signin.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from ui import signin

HERE = Path(__file__).parent
PAGES = {
    "image": st.Page(HERE / "pages" / "image.py", title="Image VLM", icon=":material/image:", url_path="image"),
    "video": st.Page(HERE / "pages" / "video.py", title="Video VLM", icon=":material/movie:", url_path="video"),
    "runs": st.Page(HERE / "pages" / "runs.py", title="Runs", icon=":material/list:", url_path="runs"),
}
CHOICES = {
    "all": ["image", "video", "runs"],
    "image": ["image", "runs"],
    "video": ["video", "runs"],
}
LANDING = "start"  # the hidden default page's URL path (see below)

# A local file, not a `:material/...:` name: the browser would fetch that icon from a font host, which
# fails offline.
st.set_page_config(page_title="VLM fine-tuning", page_icon=str(HERE / "assets" / "icon.svg"), layout="wide")

wanted_choice = os.environ.get("VLM_PAGE", "all").strip().lower() or "all"
choice = wanted_choice if wanted_choice in CHOICES else "all"

# Before anything else of the app: a session that has not signed in gets a router that knows only the form, so
# no page (nor a page's name in the navigation) is reachable, and it never gets the router flag the pages check.
# A page link opened before signing in comes back here as ?page=<name> (ensure_router), which survives the form.
if not signin.signed_in():
    form = st.Page(signin.sign_in_page, title="Sign in", url_path=LANDING, visibility="hidden", default=True)
    st.navigation([form], position="hidden").run()
    st.stop()

if wanted_choice != choice:
    st.warning(f"VLM_PAGE={wanted_choice!r} is not one of {', '.join(CHOICES)}; showing every page.")
st.session_state["vlm:router"] = True  # the pages check it (ui.components.ensure_router)


def open_first_page() -> None:
    st.switch_page(PAGES[CHOICES[choice][0]])


# Streamlit serves its default page at "/" only, so a recipe page that is the default answers "Page not
# found" at its own URL (/image, /video). A hidden landing page is the default instead: every recipe page
# keeps its URL, and "/" opens this server's first page.
landing = st.Page(open_first_page, title="VLM fine-tuning", url_path=LANDING, visibility="hidden", default=True)
page = st.navigation(
    [landing, *(PAGES[name] for name in CHOICES[choice])], position="sidebar" if choice == "all" else "top"
)
# A page URL opened on a fresh server comes back here as ?page=<name> (see ui.components.ensure_router).
wanted = st.query_params.get("page")
if wanted:
    del st.query_params["page"]
    if wanted in CHOICES[choice] and page.url_path != PAGES[wanted].url_path:
        st.switch_page(PAGES[wanted])
page.run()
