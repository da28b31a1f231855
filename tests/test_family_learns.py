"""A family other than Qwen2.5-VL learns the tiny image task as well as Qwen2.5-VL does: the shipped tiny image preset
with only its model swapped for the tiny Qwen3.5 (and its data folder set) clears the bar of test_image_train.py's
`test_the_tiny_preset_learns_to_see_the_red_blob`. The warm start teaches the format with coin-flip answers, GRPO starts
at chance and must make the answer depend on the image, and held-out accuracy must show it.

Qwen3.5 took this test over from Qwen3-VL (whose processor and vision tower it shares; Qwen3-VL still trains, evaluates
and compares in test_family_recipes.py) to keep `make test` under its time budget: one 300-step run, not two. Its
hybrid text tower (a Gated DeltaNet layer, then full attention) is the newer path. No settings change, so no preset
of its own ships. For Qwen3-VL, shorter runs did not learn: 150 GRPO steps, at the preset's learning rate or twice it,
ended at chance (the 300-step run climbs from step ~150); Qwen3.5's held-out accuracy at 300 steps is 0.92."""

from __future__ import annotations

import pytest

from conftest import assert_learned_the_red_blob
from core.runs import RunDir

PRESET = "image_vlm/configs/tiny.yaml"
MODEL = "tiny:qwen3_5"


def learn(run: RunDir, data_root, *overrides: str) -> int:
    """The preset as `make train-image CONFIG=image_vlm/configs/tiny.yaml` runs it, with the model swapped, on one
    intra-op thread (as `learned_image_run`), so the float sums and the whole trajectory are the same on every
    machine."""
    import torch

    from image_vlm import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train.main(["--config", PRESET, "--run-dir", str(run.path), f"model.name={MODEL}", f"data.root={data_root}", *overrides])
    finally:
        torch.set_num_threads(threads)


# 300 GRPO steps of 64 completions take about 5 minutes on an idle 2-core CPU; on a busy one they outlast the
# suite's 15-minute timeout.
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_tiny_qwen3_5_learns_to_see_the_red_blob(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    assert learn(run, tmp_path / "data") == 0, "the tiny preset did not finish with Qwen3.5"
    assert "model family: Qwen3.5" in capsys.readouterr().out
    assert_learned_the_red_blob(run)
