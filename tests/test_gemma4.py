"""What is Gemma 4's own in the family table (`core.families.gemma4`): clips go through its video processor, which
stamps every frame with its time and whose token count the row predicts; the chat template renders with thinking
off unless asked; the tiny model keeps the 31B model's layer mix; and the shipped tiny video preset, on Gemma 4,
learns to write valid JSON."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import ROOT, run_cli
from core.config import ModelSection
from core.families import family_by_key, family_of_processor
from core.generation import build_inputs
from core.models import load_processor
from core.tiny import resolve_model_name

QUESTION = [{"type": "text", "text": "What happens?"}]


def tiny_processor():
    return load_processor(ModelSection(name="tiny:gemma4"))


def tiny_config():
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model_name("tiny:gemma4"))


def test_a_clip_goes_through_gemma4s_video_processor_with_its_frame_times_and_the_row_counts_its_tokens():
    processor = tiny_processor()
    family = family_by_key("gemma4")
    assert family_of_processor(processor) is family and family.modalities == ("image", "video")
    assert type(processor.video_processor).__name__ == "Gemma4VideoProcessor"

    frames, height, width = 3, 90, 150
    times = [0.5, 61.5, 62.5]
    clip = {"type": "video", "video": np.zeros((frames, height, width, 3), np.uint8), "timestamps_s": times}
    inputs = build_inputs(processor, [[{"role": "user", "content": [clip, *QUESTION]}]])

    # Frames, not pictures: the video processor's tensors, one row of patches per frame.
    assert "pixel_values" not in inputs and inputs["pixel_values_videos"].shape[0] == frames
    assert inputs["num_frames_per_video"].tolist() == [frames]
    config = tiny_config()
    video_ids = int((inputs["input_ids"] == config.video_token_id).sum())
    kwargs = family.video_kwargs([(frames, height, width)], [times])
    counted = family.video_tokens(config, frames, height, width, kwargs)
    assert video_ids == counted.tokens == frames * 60  # 90x150 px at 70 tokens a frame: 6x10 tokens of 6 px
    # Each frame is stamped with its real time (mm:ss), not a guessed 24 fps.
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    stamps = re.findall(r"(\d\d:\d\d) <\|image>(?:<\|video\|>)+<image\|>", text)
    assert stamps == ["00:00", "01:01", "01:02"]


def test_the_generation_prompt_has_thinking_off_unless_asked():
    processor = tiny_processor()
    family = family_by_key("gemma4")
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You judge fires."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Fire?"}]},
    ]
    off = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The real template writes a space after each text part of a system turn given as a list, as the recipes give it.
    assert off == (
        "<bos><|turn>system\nYou judge fires. <turn|>\n<|turn>user\n<|image|>Fire?<turn|>\n"
        "<|turn>model\n<|channel>thought\n<channel|>"
    )
    render = processor.apply_chat_template
    assert render(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False) == off
    on = render(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert on.startswith("<bos><|turn>system\n<|think|>\nYou judge fires.") and on.endswith("<|turn>model\n")
    # A system turn of its own, unlike Gemma 3's.
    assert family.system_role and not family_by_key("gemma3").system_role


def test_the_tiny_model_keeps_the_31b_models_layer_mix():
    from transformers import AutoModelForImageTextToText

    from core.families.gemma4 import gemma4_31b_config

    published = gemma4_31b_config().text_config
    assert [published.layer_types.count(kind) for kind in ("sliding_attention", "full_attention")] == [50, 10]
    text = tiny_config().text_config
    assert text.layer_types == ["sliding_attention", "full_attention"]
    assert text.attention_k_eq_v and text.use_bidirectional_attention == "vision"
    sliding, full = (text.per_layer_config[index] for index in range(2))
    assert full.head_dim == 2 * sliding.head_dim and full.num_key_value_heads < sliding.num_key_value_heads

    model = AutoModelForImageTextToText.from_pretrained(resolve_model_name("tiny:gemma4"))
    layers = model.model.language_model.layers
    assert layers[0].self_attn.is_sliding and not layers[1].self_attn.is_sliding
    # The global layer's keys are its values, as the 31B model's (no value projection).
    assert layers[0].self_attn.v_proj is not None and layers[1].self_attn.v_proj is None


@pytest.mark.slow
def test_the_video_tiny_preset_with_gemma4_beats_its_base_on_valid_json(tmp_path):
    """`video_vlm/configs/tiny.yaml` on `tiny:gemma4`, trained and evaluated as the CLI runs them: the base writes no
    valid JSON, the tuned model does."""
    runs = tmp_path / "runs"
    env = {"VLM_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"}
    preset = str(ROOT / "video_vlm/configs/tiny.yaml")
    overrides = ("model.name=tiny:gemma4", f"data.root={tmp_path / 'synthetic-dashcam'}")
    trained = run_cli("video_vlm.train", "--config", preset, *overrides, cwd=tmp_path, env=env, timeout=1200)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "model family: Gemma 4" in trained.stdout and "generating synthetic moving-square clips" in trained.stdout
    (run_dir,) = [path for path in runs.iterdir() if path.is_dir()]

    evaluated = run_cli("video_vlm.evaluate", "--run", str(run_dir), env=env, timeout=1200)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    report = json.loads((run_dir / "eval" / "val.json").read_text())
    base, tuned = report["models"]["base"], report["models"]["tuned"]
    print(f"tiny video preset on Gemma 4: valid_rate base {base['valid_rate']:.2f}, tuned {tuned['valid_rate']:.2f}")
    assert tuned["valid_rate"] >= base["valid_rate"] + 0.3, (base, tuned)
