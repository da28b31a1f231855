"""The memory estimate beside Start (ui/estimate.py)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from conftest import app, button, texts


def markdown_text(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


@pytest.mark.parametrize("page", ["image", "video"])
def test_estimate_beside_start_for_the_tiny_preset(dirs, page):
    at = app(page)
    assert not at.exception
    assert "Memory estimate" in markdown_text(at)
    assert ":green-background[Fits:" in markdown_text(at)
    assert button(at, "Update estimate")


def test_estimate_follows_the_form_and_start_asks_before_an_oversized_run(dirs, monkeypatch):
    """A cap too small for the 7B preset turns the estimate red; Start then refuses until it is confirmed."""
    monkeypatch.setattr("ui.recipes.launch_training", lambda *a, **k: pytest.fail("must not launch"))
    at = app("image")
    preset = [s for s in at.selectbox if s.label == "Preset"][0]
    preset.set_value("full-size: qwen2_5_vl_7b_grpo").run()
    assert ":green-background[Fits:" in markdown_text(at)
    [n for n in at.number_input if n.label == "Max GPU memory (GB)"][0].set_value(18.0)
    button(at, "Update estimate").click().run()
    assert not at.exception
    assert ":red-background[Will not fit:" in markdown_text(at)
    assert "To fit, set" in texts(at.caption)
    button(at, "Start training").click().run()
    assert "the memory estimate says this config will not fit" in texts(at.error)
    [c for c in at.checkbox if c.label.startswith("Start even though")][0].check()
    button(at, "Start training").click().run()
    assert "the memory estimate says" not in texts(at.error)
    assert "Not started" in texts(at.error), "past the estimate, the missing 7B dataset stops it"
