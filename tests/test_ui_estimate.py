"""The memory estimate beside Start (ui/estimate.py), and what a model swap does to the form it estimates."""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from conftest import app, button, number, texts

SEVEN_B = "Qwen/Qwen2.5-VL-7B-Instruct"


def markdown_text(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


def select(at: AppTest, label: str):
    return [s for s in at.selectbox if s.label == label][0]


def peak_gib(at: AppTest) -> float:
    match = re.search(r"(?:Fits|Fits tightly|Will not fit): ([\d.]+) GiB of", markdown_text(at))
    assert match, markdown_text(at)
    return float(match.group(1))


@pytest.mark.parametrize("page", ["image", "video"])
def test_estimate_beside_start_for_the_tiny_preset(dirs, page):
    at = app(page)
    assert not at.exception
    assert "Memory estimate" in markdown_text(at)
    assert ":green-background[Fits:" in markdown_text(at)
    assert button(at, "Start training")


def test_estimate_follows_the_form_and_start_asks_before_an_oversized_run(dirs, monkeypatch):
    """A cap too small for the 7B preset turns the estimate red; Start then refuses until it is confirmed."""
    monkeypatch.setattr("ui.recipes.launch_training", lambda *a, **k: pytest.fail("must not launch"))
    at = app("image")
    preset = [s for s in at.selectbox if s.label == "Preset"][0]
    preset.set_value("full-size: qwen2_5_vl_7b_grpo").run()
    assert ":green-background[Fits:" in markdown_text(at)
    [n for n in at.number_input if n.label == "Max GPU memory (GB)"][0].set_value(18.0).run()
    assert not at.exception
    assert ":red-background[Will not fit:" in markdown_text(at)
    assert "To fit, change one of these" in markdown_text(at)
    button(at, "Start training").click().run()
    assert "the memory estimate says this config will not fit" in texts(at.error)
    [c for c in at.checkbox if c.label.startswith("Start even though")][0].check()
    button(at, "Start training").click().run()
    assert "the memory estimate says" not in texts(at.error)
    assert "Not started" in texts(at.error), "past the estimate, the 7B weights (not downloaded, offline) stop it"


def test_a_model_swap_applies_its_preset_and_the_estimate_follows(dirs):
    """Swapping the tiny preset's model for a 7B one takes the 7B preset's dtype, batch and image budget, and the
    estimate beside Start is of the 7B model at once (not the tiny one's 0.8 GiB)."""
    at = app("image")
    tiny_peak = peak_gib(at)
    assert tiny_peak < 2
    select(at, "Model").set_value(SEVEN_B).run()
    assert not at.exception, at.exception
    assert select(at, "Weight dtype").value == "auto", "the 7B preset's dtype, not the tiny one's float32"
    assert number(at, "Batch size (per device)").value == 4
    assert number(at, "Image budget (pixels)").value == 350 * 350
    assert number(at, "Max GPU memory (GB)").value == 100
    assert select(at, "Fine-tuning method").value == "full", "the method the user chose stays"
    assert peak_gib(at) > 40, markdown_text(at)
    assert "Memory settings from the qwen2_5_vl_7b_grpo preset" in texts(at.caption)
    # And back: the tiny model takes the tiny preset's settings again.
    select(at, "Model").set_value("tiny:qwen2_5_vl").run()
    assert select(at, "Weight dtype").value == "float32" and number(at, "Batch size (per device)").value == 64
    assert peak_gib(at) == tiny_peak


def test_advice_lists_every_change_that_fits_and_the_bar_turns_red(dirs):
    """The 7B model in fp32 with the tiny preset's batch of 64: bf16 alone fits, and so does QLoRA; the usage bar
    past 100 % is red."""
    at = app("image")
    select(at, "Model").set_value(SEVEN_B).run()
    select(at, "Weight dtype").set_value("float32")
    number(at, "Batch size (per device)").set_value(64)
    number(at, "Image budget (pixels)").set_value(3136)
    at.run()
    text = markdown_text(at)
    assert ":red-background[Will not fit:" in text, text
    assert "**Weight dtype** → bfloat16 (`model.dtype=bfloat16`)" in text
    assert "**Fine-tuning method** → qlora (`finetune.method=qlora`)" in text
    share = re.search(r"peak (\d+)% of usable memory", texts(at.caption))
    assert share and int(share.group(1)) > 100
    bar = next(m.value for m in at.markdown if "width:100%" in str(m.value))
    assert "#ff4b4b" in bar, bar


def test_core_advice_names_bf16_for_fp32_weights():
    from core.config import read_yaml, validate_config
    from image_vlm.config import ImageConfig
    from image_vlm.estimate import estimate

    data = read_yaml("image_vlm/configs/tiny.yaml")
    data["model"]["name"] = SEVEN_B
    result = estimate(validate_config(ImageConfig, data))
    assert not result.fits
    assert any(item.startswith("model.dtype=bfloat16 (peak ") for item in result.advice), result.advice
    assert any(item.startswith("finetune.method=qlora (peak ") for item in result.advice), result.advice
