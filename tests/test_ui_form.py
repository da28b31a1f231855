"""The new-run form (ui/form.py): fields, their checks, presets and values kept across reloads."""

from __future__ import annotations

import pytest

from conftest import app, button, fake_popen, make_run, number, texts


def test_form_fields_present_with_help_and_ranges(dirs):
    at = app("image")
    numbers = {n.label: n for n in at.number_input}
    for label in ("LoRA rank (r)", "LoRA alpha", "Max steps", "Epochs", "Batch size (per device)", "Learning rate",
                  "Generations per prompt", "Weight: format reward", "Weight: correctness reward"):
        assert label in numbers, f"missing {label}; have {sorted(numbers)}"
        assert numbers[label].help, f"{label} has no help"
    # Help is the config field's description plus its allowed range.
    assert "LoRA rank" in numbers["LoRA rank (r)"].help and "Allowed: >= 1 and <= 1024" in numbers["LoRA rank (r)"].help
    assert numbers["LoRA rank (r)"].min == 1 and numbers["LoRA rank (r)"].max == 1024
    assert numbers["Generations per prompt"].value == 4  # from the tiny preset
    checkboxes = {c.label: c for c in at.checkbox}
    for label in ("Vision attention", "Vision MLP", "Language attention", "Language MLP"):
        assert label in checkboxes and checkboxes[label].help
    selects = {s.label: s for s in at.selectbox}
    assert selects["Fine-tuning method"].options == ["LoRA", "QLoRA (4-bit)", "full fine-tuning"]
    assert "Optimizer" in selects and "adamw_torch" in selects["Optimizer"].options
    assert selects["Model"].value == "tiny:qwen2_5_vl"
    assert "model family: Qwen2.5-VL" in texts(at.caption)


def test_video_form_has_frame_settings(dirs):
    at = app("video")
    numbers = {n.label: n for n in at.number_input}
    assert numbers["Frames per clip"].max == 64 and numbers["Frames per clip"].help
    assert "Frame size (longest side, px)" in numbers
    assert "Generations per prompt" not in numbers  # GRPO only


def test_invalid_form_values_give_a_field_message(dirs, monkeypatch):
    monkeypatch.setattr("ui.recipes.launch_training", lambda *a, **k: pytest.fail("must not launch"))
    at = app("image")
    [n for n in at.number_input if n.label == "Generations per prompt"][0].set_value(3)
    button(at, "Start training").click().run()
    assert not at.exception
    assert "Not started" in texts(at.error) and "train.num_generations" in texts(at.error)


def test_switching_preset_refills_the_form(dirs):
    at = app("video")
    preset = [s for s in at.selectbox if s.label == "Preset"][0]
    assert "full-size: internvl3_8b_sft" in preset.options, preset.options
    preset.set_value("full-size: internvl3_8b_sft").run()
    assert not at.exception
    assert [s for s in at.selectbox if s.label == "Model"][0].value == "OpenGVLab/InternVL3-8B-hf"


def test_build_config_reports_bad_values_by_field():
    from core.config import ConfigError
    from ui.form import YamlText, build_config
    from ui.recipes import IMAGE, preset_values, presets

    base = preset_values(IMAGE, next(iter(presets(IMAGE).values())))
    cfg = build_config(IMAGE, base, {"rewards.weights": {"format": 0.0, "correctness": 2.0}})
    assert cfg.rewards.weights == {"correctness": 2.0}, "a zero weight turns the reward off"
    with pytest.raises(ConfigError, match="every reward weight is 0"):
        build_config(IMAGE, base, {"rewards.weights": {"format": 0.0, "correctness": 0.0}})
    with pytest.raises(ConfigError, match="'train.trainer' is not valid YAML"):
        build_config(IMAGE, base, {"train.trainer": YamlText("train.trainer", "a: [1, 2")})
    with pytest.raises(ConfigError, match="finetune.method"):
        build_config(IMAGE, base, {"finetune.method": "adapters"})
    assert build_config(IMAGE, base, {"data.labels": YamlText("data.labels", "")}).data.labels == {"wildfire": "Yes", "nowildfire": "No"}


def test_form_values_survive_a_reload(dirs, monkeypatch):
    """The values of the last start come back in a new session (a page reload), from runs/.form-image.yaml."""
    runs, _ = dirs
    monkeypatch.setattr("core.gpu_lease.subprocess.Popen", fake_popen([]))
    at = app("image")
    number(at, "LoRA rank (r)").set_value(4)
    button(at, "Start training").click().run()
    assert "Started run image-" in texts(at.success)
    assert (runs / ".form-image.yaml").is_file()
    reloaded = app("image")
    assert number(reloaded, "LoRA rank (r)").value == 4


def test_load_a_runs_config_into_the_form(dirs):
    runs, _ = dirs
    make_run(runs, "image-20260101-100000", "finished", adapter=True, config_overrides={"finetune": {"r": 3}})
    at = app("image")
    assert number(at, "LoRA rank (r)").value != 3
    button(at, "Load config into the form").click().run()
    assert not at.exception, at.exception
    assert number(at, "LoRA rank (r)").value == 3
    assert "now holds the config of run image-20260101-100000" in texts(at.success)
