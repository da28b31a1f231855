"""The memory estimate of a DPO step, in both recipes: chosen and rejected rows of each pair in one forward, a
reference pass that costs a second copy of the weights only under full fine-tuning, and no rollouts."""

from __future__ import annotations

import pytest

from core.config import load_config
from image_vlm.config import ImageConfig
from video_vlm.config import VideoConfig


def test_the_estimate_covers_a_dpo_step():
    from image_vlm.estimate import estimate

    preset = "image_vlm/configs/qwen2_5_vl_7b_grpo.yaml"
    lora = estimate(load_config(ImageConfig, preset, ["method=dpo"]), with_advice=False)
    grpo = estimate(load_config(ImageConfig, preset), with_advice=False)
    assert lora.parts_gib["generation KV cache"] == 0 < grpo.parts_gib["generation KV cache"]  # no rollouts per step
    assert lora.parts_gib["reference model"] == 0 and any("adapter switched off" in note for note in lora.notes)
    assert any("DPO: 4 pairs a step" in note for note in lora.notes)
    # Chosen and rejected rows: twice the pairs per step is twice the activations.
    double = estimate(load_config(ImageConfig, preset, ["method=dpo", "dpo.per_device_train_batch_size=8"]), with_advice=False)
    assert double.parts_gib["activations"] == pytest.approx(2 * lora.parts_gib["activations"], rel=0.01)
    full = estimate(load_config(ImageConfig, preset, ["method=dpo", "finetune.method=full"]), with_advice=False)
    assert full.parts_gib["reference model"] == pytest.approx(full.parts_gib["weights"])


def test_the_video_estimate_covers_a_dpo_step():
    from video_vlm.estimate import estimate

    preset = "video_vlm/configs/internvl3_8b_sft.yaml"
    sft = estimate(load_config(VideoConfig, preset), with_advice=False)
    lora = estimate(load_config(VideoConfig, preset, ["method=dpo", "dpo.per_device_train_batch_size=1"]), with_advice=False)
    assert any("DPO step: 2 sequences" in note for note in lora.notes)  # one pair: its chosen and rejected rows
    assert lora.parts_gib["activations"] > 1.5 * sft.parts_gib["activations"]  # two clips' rows against one
    assert lora.parts_gib["reference model"] == 0
    full = estimate(load_config(VideoConfig, preset, ["method=dpo", "finetune.method=full"]), with_advice=False)
    assert full.parts_gib["reference model"] == pytest.approx(full.parts_gib["weights"])
    # A curriculum's SFT stage with a larger step than DPO's decides the peak.
    big_sft = ["method=dpo", "dpo.per_device_train_batch_size=1", "stages=[{name: sft, train: {per_device_train_batch_size: 4}}]"]
    assert any("SFT step: 4 sequences" in note for note in estimate(load_config(VideoConfig, preset, big_sft), with_advice=False).notes)
