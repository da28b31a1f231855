"""Small pieces the panels share: session state, messages, run labels, thumbnails.

Every run read goes through these and is guarded: a run folder deleted from under the UI reads as state
`missing` and is reported, never raised.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import streamlit as st

from core.media.errors import MediaError
from core.runs import RunDir, runs_root
from ui.recipes import Recipe, artifact_of, recipe_runs, tail

STATE_COLORS = {
    "starting": "gray",
    "running": "blue",
    "stopping": "orange",
    "stopped": "orange",
    "finished": "green",
    "failed": "red",
    "crashed": "red",
    "missing": "gray",
}

STATE_HELP = {
    "starting": "The trainer is loading the model and data.",
    "running": "Training. Closing this tab does not stop it.",
    "stopping": "Saving a checkpoint before stopping.",
    "stopped": "Stopped with a checkpoint saved; Resume continues from it.",
    "finished": "Done; the adapter is saved in the run folder.",
    "failed": "The trainer raised an error; see the message and the log.",
    "crashed": "The trainer process is gone without finishing (killed or out of memory); Resume continues from the latest checkpoint.",
    "missing": "No status yet (the trainer is launching) or the run folder was deleted.",
}



def session(name: str, default: Any) -> Any:
    """A session-state value created on first use."""
    if name not in st.session_state:
        st.session_state[name] = default
    return st.session_state[name]


def flash(scope: str, kind: str, text: str) -> None:
    """A message that survives the fragment reruns of the next few seconds."""
    session(f"{scope}:flash", []).append((time.time(), kind, text))


def show_flash(scope: str, max_age_s: float = 15.0) -> None:
    now = time.time()
    messages = [m for m in session(f"{scope}:flash", []) if now - m[0] < max_age_s]
    st.session_state[f"{scope}:flash"] = messages
    for _, kind, text in messages:
        getattr(st, kind)(text)


def run_at(run_id: str) -> RunDir:
    return RunDir(runs_root() / run_id)


def state_of(run: RunDir) -> str:
    return run.read_status().get("state", "missing")


def state_badge(state: str) -> None:
    st.badge(state, color=STATE_COLORS.get(state, "gray"), help=STATE_HELP.get(state))


def gone_message(run_id: str) -> None:
    st.warning(f"Run {run_id} no longer exists: its folder was deleted or moved. Pick another run or start a new one.")


def log_tail(run: RunDir, path: Path | None = None, lines: int = 40, expanded: bool = False, label: str = "Trainer log (last lines)") -> None:
    text = tail(path or run.log_path, lines)
    with st.expander(label, expanded=expanded):
        st.code(text or "(empty)", language=None, wrap_lines=True)


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnail_uri(path: str, size: int = 96) -> str | None:
    """A small PNG data URI of an image file, for tables; None when it cannot be read."""
    from core.media.image import open_image

    try:
        image = open_image(path)
    except MediaError:
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def trained_runs(recipe: Recipe) -> list[RunDir]:
    return [run for run in recipe_runs(recipe) if artifact_of(run) is not None]


def select_trained_run(recipe: Recipe, runs: list[RunDir], label: str, key: str) -> RunDir:
    ids = [run.id for run in runs]
    if st.session_state.get(key) not in ids:
        st.session_state.pop(key, None)
    run = run_at(st.selectbox(label, ids, key=key))
    st.caption(f"{state_of(run)} · weights: {weights_label(run)}")
    return run


def artifact_name(run: RunDir) -> str:
    artifact = artifact_of(run)
    if artifact is None:
        return "no weights"
    return str(artifact.relative_to(run.path)) if artifact.is_relative_to(run.path) else str(artifact)


def weights_label(run: RunDir) -> str:
    """The weights in words: a run still training (or stopped) offers its latest checkpoint, said so."""
    from core.checkpoints import checkpoint_step

    artifact = artifact_of(run)
    name = f"`{artifact_name(run)}`"
    step = checkpoint_step(artifact) if artifact is not None else None
    return f"latest checkpoint, step {step} ({name})" if step is not None else name


def escape_markdown(text: str) -> str:
    """
    >>> escape_markdown("a*b_<c>")
    'a\\\\*b\\\\_\\\\<c\\\\>'
    """
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>$~" else c for c in text)
