"""The new-run form (ui/form.py): fields, their checks, presets and values kept across reloads; what Enter does, which
fields apply, loading a run's config, the steps beside Start and the "All other settings" sections."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from conftest import app, button, fake_popen, make_run, number, texts


def select(at: AppTest, label: str):
    matches = [s for s in at.selectbox if s.label == label]
    assert matches, f"no select {label!r}; selects: {[s.label for s in at.selectbox]}"
    return matches[0]


def press_enter(at: AppTest, field) -> AppTest:
    """Enter in a field, as the browser handles it (st.form's `enter_to_submit`, on by default): inside a form it
    presses the form's first submit button, then the page reruns; outside a form it only commits the value."""
    form_id = field.proto.form_id
    if form_id:
        form = next(f for f in at.form if f.proto.form.form_id == form_id)
        submits = [b for b in at.button if b.proto.is_form_submitter and b.proto.form_id == form_id]
        if form.proto.form.enter_to_submit and submits and not submits[0].proto.disabled:
            submits[0].click()
    return at.run()


def shown_in_browser(field, held_before):
    """What a browser shows in a field after a rerun: Streamlit's frontend keeps the value it holds for a widget it
    already shows, unless the server sends one (the proto's `set_value`, which writing the widget's key sets)."""
    return field.value if field.proto.set_value else held_before


def test_form_fields_present_with_help_and_ranges(dirs):
    at = app("image")
    select(at, "Fine-tuning method").set_value("lora").run()
    numbers = {n.label: n for n in at.number_input}
    for label in ("LoRA rank (r)", "LoRA alpha", "Max steps", "Batch size (per device)", "Learning rate",
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
    # Epochs count only when Max steps is -1.
    assert "Epochs" not in numbers
    number(at, "Max steps").set_value(-1).run()
    assert number(at, "Epochs").value == 1


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
    monkeypatch.setattr("core.launch.subprocess.Popen", fake_popen([]))
    at = app("image")
    select(at, "Fine-tuning method").set_value("lora").run()
    number(at, "LoRA rank (r)").set_value(4)
    button(at, "Start training").click().run()
    assert "Started run image-" in texts(at.success)
    assert (runs / ".form-image.yaml").is_file()
    reloaded = app("image")
    assert select(reloaded, "Fine-tuning method").value == "lora"
    assert number(reloaded, "LoRA rank (r)").value == 4


def test_load_a_runs_config_into_the_form(dirs):
    runs, _ = dirs
    make_run(runs, "image-20260101-100000", "finished", adapter=True,
             config_overrides={"finetune": {"method": "lora", "r": 3}})
    at = app("image")
    assert "LoRA rank (r)" not in {n.label for n in at.number_input}, "the tiny preset fine-tunes in full"
    button(at, "Load config into the form").click().run()
    assert not at.exception, at.exception
    assert select(at, "Fine-tuning method").value == "lora"
    assert number(at, "LoRA rank (r)").value == 3
    assert "now holds the config of run image-20260101-100000" in texts(at.success)


def test_loading_a_config_replaces_what_was_typed(dirs, monkeypatch):
    """A value typed into a field gives way to the loaded run's: on the page as the browser shows it, and in the run
    Start launches."""
    runs, _ = dirs
    calls = []
    monkeypatch.setattr("core.launch.subprocess.Popen", fake_popen(calls))
    make_run(runs, "image-20260101-100000", "finished", adapter=True, config_overrides={"train": {"max_steps": 7}})
    at = app("image")
    number(at, "Max steps").set_value(9).run()
    button(at, "Load config into the form").click().run()
    assert not at.exception, at.exception
    steps = number(at, "Max steps")
    assert steps.value == 7
    assert shown_in_browser(steps, held_before=9) == 7, "the browser would keep showing 9"
    button(at, "Start training").click().run()
    (command,) = calls
    import yaml

    assert yaml.safe_load(open(command[command.index("--config") + 1]))["train"]["max_steps"] == 7


def test_enter_in_a_field_starts_nothing(dirs, monkeypatch):
    """Enter in a number field commits it and starts no run; only a click on Start does."""
    calls = []
    monkeypatch.setattr("core.launch.subprocess.Popen", fake_popen(calls))
    at = app("image")
    press_enter(at, number(at, "Max steps").set_value(40))
    assert not at.exception, at.exception
    assert calls == [] and "Started run" not in texts(at.success)
    assert number(at, "Max steps").value == 40
    press_enter(at, number(at, "Learning rate").set_value(0.001))
    assert calls == []
    button(at, "Start training").click().run()
    assert len(calls) == 1 and "Started run image-" in texts(at.success)


def test_full_finetuning_hides_the_lora_fields(dirs):
    at = app("image")
    assert select(at, "Fine-tuning method").value == "full"
    lora = ("LoRA rank (r)", "LoRA alpha", "LoRA dropout")
    toggles = ("Vision attention", "Vision MLP", "Language attention", "Language MLP")
    assert not {n.label for n in at.number_input} & set(lora)
    assert not {c.label for c in at.checkbox} & set(toggles)
    assert "Full fine-tuning precision" in {s.label for s in at.selectbox}
    select(at, "Fine-tuning method").set_value("qlora").run()
    assert set(lora) <= {n.label for n in at.number_input}
    assert set(toggles) <= {c.label for c in at.checkbox}
    assert "Full fine-tuning precision" not in {s.label for s in at.selectbox}


def test_the_steps_beside_start_include_the_warm_start(dirs):
    """The tiny preset warms up for 150 steps before GRPO: "Max steps 40" trains 190."""
    at = app("image")
    assert number(at, "Warm-start steps").value == 150
    number(at, "Max steps").set_value(40).run()
    assert "Trains 190 optimizer steps in all" in texts(at.markdown)
    assert "warm start 150 steps + GRPO 40 steps" in texts(at.caption)
    [c for c in at.checkbox if c.label.startswith("Warm start")][0].uncheck().run()
    assert "Trains 40 optimizer steps in all" in texts(at.markdown)
    assert "Warm-start steps" not in {n.label for n in at.number_input}


def test_all_other_settings_are_grouped_and_readable(dirs):
    at = app("image")
    (expander,) = [e for e in at.expander if e.label.startswith("All other settings")]
    tabs = [t.label for t in expander.tabs]
    assert tabs == ["Model", "Data", "Warm start", "GRPO training", "Evaluation", "Logging and checkpoints"], tabs
    labels = {w.label for w in [*expander.number_input, *expander.text_input, *expander.text_area, *expander.checkbox,
                                *expander.selectbox]}
    for raw in ("Vllm gpu memory utilization", "Jsonl", "Trainer", "Beta", "Num workers"):
        assert raw not in labels, f"raw name {raw!r} in {sorted(labels)}"
    assert {"Hub revision", "Attention kernel", "KL penalty (GRPO beta)", "Rollouts with vLLM",
            "JSONL of your own targets"} <= labels, sorted(labels)
    assert any(label.startswith("Other GRPOConfig arguments") for label in labels), sorted(labels)
    assert "vLLM server URL (empty: colocate)" not in labels, "vLLM's own settings apply only with vLLM on"
    assert "DPO beta" not in labels and "Answers sampled per prompt" not in labels, "DPO's fields apply under DPO only"
