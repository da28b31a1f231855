"""A family other than Qwen2.5-VL learns the tiny image task as well as Qwen2.5-VL does: the shipped tiny image preset
with only its model swapped for the tiny Qwen3-VL (and its data folder set) clears the bar of test_image_train.py's
`test_the_tiny_preset_learns_to_see_the_red_blob`. The warm start teaches the format with coin-flip answers, GRPO starts
at chance and must make the answer depend on the image, and held-out accuracy must show it.

No settings change for Qwen3-VL, so no preset of its own ships. Shorter runs were tried and do not learn: 150 GRPO
steps, at the preset's learning rate or twice it, end at chance (the preset's 300-step run climbs from step ~150)."""

from __future__ import annotations

import json

import pytest

from core.config import read_yaml
from core.runs import RunDir

PRESET = "image_vlm/configs/tiny.yaml"
MODEL = "tiny:qwen3_vl"


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
def test_the_tiny_qwen3_vl_learns_to_see_the_red_blob(tmp_path, capsys):
    from image_vlm import evaluate

    run = RunDir(tmp_path / "run")
    assert learn(run, tmp_path / "data") == 0, "the tiny preset did not finish with Qwen3-VL"
    assert "model family: Qwen3-VL" in capsys.readouterr().out

    grpo = [m for m in run.read_metrics() if m.get("stage") == "grpo" and "loss" in m]
    assert len(grpo) == read_yaml(PRESET)["train"]["max_steps"] == 300
    assert any(m.get("stage") == "warm_start" for m in run.read_metrics())
    fmt = sum(m["rewards/format_reward/mean"] for m in grpo[:10]) / 10
    correctness = [m["rewards/correctness_reward/mean"] for m in grpo]
    start, end = sum(correctness[:30]) / 30, sum(correctness[-30:]) / 30
    print(f"format reward after the warm start {fmt:.2f}; GRPO correctness: first 30 steps {start:.2f}, last 30 {end:.2f}")
    assert fmt >= 0.8, "the warm start taught the format"
    assert 0.3 <= start <= 0.7, "coin-flip answers: GRPO starts near chance"
    assert end >= start + 0.2, (start, end)

    assert evaluate.main(["--run", str(run.path)]) == 0
    report = json.loads((run.eval_dir / "test.json").read_text())
    base, tuned = report["models"]["base"]["accuracy"], report["models"]["tuned"]["accuracy"]
    print(f"held-out accuracy: base {base:.2f}, tuned {tuned:.2f}")
    assert tuned >= 0.8 and tuned >= base + 0.25, (base, tuned)
