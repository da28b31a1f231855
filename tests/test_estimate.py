"""The pre-launch estimate: token counts against the processors themselves, parameter counts against the
published totals, memory that moves the right way with each knob, calibration, and the `--estimate` CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.config import load_config
from core.estimate import GIB, EstimateError
from image_vlm.config import ImageConfig
from video_vlm.config import VideoConfig

ROOT = Path(__file__).resolve().parents[1]
IMAGE_7B = "image_vlm/configs/qwen2_5_vl_7b_grpo.yaml"
VIDEO_8B = "video_vlm/configs/internvl3_8b_sft.yaml"
IMAGE_TINY = "image_vlm/configs/tiny.yaml"
VIDEO_TINY = "video_vlm/configs/tiny.yaml"


def image_estimate(*overrides, path=IMAGE_7B, device=None):
    from image_vlm.estimate import estimate

    return estimate(load_config(ImageConfig, path, overrides), device)


def video_estimate(*overrides, path=VIDEO_8B, device=None):
    from video_vlm.estimate import estimate

    return estimate(load_config(VideoConfig, path, overrides), device)


# ---------------------------------------------------------------------------------------------- tokens


def test_the_real_image_processor_arithmetic():
    """Qwen2.5-VL's smart_resize on the Kaggle tile (350 px -> 336 px, 12 x 12 merged tokens) and on a large photo
    capped by max_pixels; the shipped config's estimate uses the same 144 tokens. (Every family against its own
    processor: tests/test_families.py.)"""
    from core.families.qwen2_5_vl import FAMILY, pixel_budget, qwen2_5_vl_7b_config

    config = qwen2_5_vl_7b_config()
    assert FAMILY.image_tokens(config, 350, 350, pixel_budget(350 * 350)) == (144, 576, 0)
    tokens = FAMILY.image_tokens(config, 3000, 4000, pixel_budget(350 * 350)).tokens
    assert tokens * 28 * 28 <= 350 * 350 and tokens > 0.8 * 350 * 350 / (28 * 28)
    assert image_estimate().visual_tokens_per_sample == 144


def test_video_sequence_tokens_follow_the_measured_budget():
    """The tiny video preset's visual and prompt counts agree with what the recipe measures with its processor
    (`token_budget`), frame wrappers within a few tokens a frame."""
    from core.models import load_processor
    from video_vlm.schema import load_schema
    from video_vlm.token_budget import token_budget

    cfg = load_config(VideoConfig, VIDEO_TINY)
    schema = load_schema(None)
    label = {name: "unknown" for name in schema.field_names}
    measured = token_budget(load_processor(cfg.model), cfg.data, schema, label)
    estimate = video_estimate(path=VIDEO_TINY)
    assert abs(estimate.visual_tokens_per_sample - measured["video_tokens"]) <= 4 * cfg.data.num_frames
    assert estimate.sequence_tokens - estimate.visual_tokens_per_sample - cfg.eval.max_new_tokens == pytest.approx(
        measured["prompt_tokens"], rel=0.1
    )


def test_image_size_comes_from_the_manifest(tmp_path):
    from image_vlm.config import ImageDataSection
    from image_vlm.estimate import KNOWN_TILE_SIZE, image_size

    (tmp_path / "train" / "wildfire").mkdir(parents=True)
    Image.new("RGB", (120, 90)).save(tmp_path / "train" / "wildfire" / "a.png")
    (tmp_path / "manifest.json").write_text(json.dumps({"splits": {"train": [{"path": "train/wildfire/a.png", "label": "wildfire"}]}}))
    size, note = image_size(ImageDataSection(root=str(tmp_path)))
    assert size == (90, 120) and "manifest.json" in note
    assert image_size(ImageDataSection(root=str(tmp_path / "none")))[0] == KNOWN_TILE_SIZE


# ---------------------------------------------------------------------------------------------- parameters


def test_parameter_counts_of_the_shipped_models():
    """Counted on the meta device: Qwen2.5-VL-7B 8.29 B, InternVL3-8B about 7.9 B; LoRA counts follow rank and targets."""
    image = image_estimate()
    video = video_estimate()
    assert image.params_total == pytest.approx(8.29e9, rel=0.002)
    assert video.params_total == pytest.approx(7.94e9, rel=0.01)
    # r=32 on the 7 language projections of 28 layers: 32 x (in + out) summed = 80.7 M
    assert image.params_trainable == 32 * 28 * (3584 * 2 * 2 + (3584 + 512) * 2 + (3584 + 18944) * 3)
    assert video.params_trainable == 4 * image.params_trainable  # r=128
    assert image_estimate("finetune.method=full").params_trainable == image.params_total
    assert image_estimate("finetune.language_mlp=false").params_trainable < image.params_trainable


# ---------------------------------------------------------------------------------------------- memory


def test_memory_moves_the_right_way():
    base = video_estimate()
    assert video_estimate("train.per_device_train_batch_size=2").peak_memory_gib > base.peak_memory_gib
    assert video_estimate("data.num_frames=24").peak_memory_gib > base.peak_memory_gib
    assert video_estimate("data.num_frames=4").peak_memory_gib < base.peak_memory_gib
    no_checkpointing = video_estimate("finetune.gradient_checkpointing=false")
    assert no_checkpointing.parts_gib["activations"] > 3 * base.parts_gib["activations"]
    full = video_estimate("finetune.method=full")
    qlora = video_estimate("finetune.method=qlora")
    assert qlora.parts_gib["weights"] < 0.6 * base.parts_gib["weights"] < full.parts_gib["weights"] + 1
    assert full.peak_memory_gib > base.peak_memory_gib > qlora.peak_memory_gib
    # Full fine-tuning in bf16 keeps 8-bit AdamW state (stochastic rounding); fp32 master weights need 4x that.
    assert full.parts_gib["optimizer state"] > 5 * base.parts_gib["optimizer state"]
    masters = video_estimate("finetune.method=full", "finetune.full_precision=fp32_master_weights")
    assert masters.parts_gib["optimizer state"] == pytest.approx(4 * full.parts_gib["optimizer state"], rel=0.01)
    assert masters.parts_gib["weights"] == pytest.approx(2 * full.parts_gib["weights"], rel=0.01)
    assert masters.peak_memory_gib > full.peak_memory_gib


def test_grpo_parts():
    """Rollouts hold a KV cache that grows with the generation batch; a full fine-tune with beta > 0 keeps a
    reference copy, a LoRA one switches the adapter off instead."""
    base = image_estimate()
    bigger = image_estimate("train.per_device_train_batch_size=8", "train.max_completion_length=512")
    assert bigger.parts_gib["generation KV cache"] > 3 * base.parts_gib["generation KV cache"]
    assert base.parts_gib["reference model"] == 0
    assert image_estimate("train.beta=0.04").parts_gib["reference model"] == 0
    full_kl = image_estimate("train.beta=0.04", "finetune.method=full")
    assert full_kl.parts_gib["reference model"] == pytest.approx(full_kl.parts_gib["weights"])
    assert image_estimate("train.optim=adamw_8bit").parts_gib["optimizer state"] < base.parts_gib["optimizer state"] / 3


def test_calibrated_against_the_published_qlora_run():
    """vlm-ft: InternVL3-8B, QLoRA r=128, batch 2, 4 frames, max length 2048, logged 11.9 GB GPU memory, steady
    through training. That reading is the between-steps figure (weights, adapters and AdamW state); ours must land
    within 35 % of it, and the peak must lie above it."""
    estimate = video_estimate(
        "finetune.method=qlora", "train.per_device_train_batch_size=2", "data.num_frames=4", "train.max_length=2048"
    )
    published_gib = 11.9e9 / GIB
    assert estimate.steady_memory_gib == pytest.approx(published_gib, rel=0.35)
    assert estimate.peak_memory_gib > published_gib


def test_a_cap_above_the_gpu_is_measured_against_the_gpu(monkeypatch):
    """The shipped presets cap at 100 GiB for a 128 GB Spark; on an 80 GB H100 the estimate must use the 80."""
    import torch

    from core.config import ModelSection
    from core.estimate import device_target

    class H100:
        name, total_memory = "NVIDIA H100 80GB HBM3", 80 * GIB

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: H100)
    over = device_target(None, ModelSection(max_memory_gb=100))
    assert (over.name, over.total_gib) == ("NVIDIA H100 80GB HBM3", 80)
    assert "below the max_memory_gb cap of 100 GiB" in over.source
    under = device_target(None, ModelSection(max_memory_gb=60))
    assert (under.total_gib, under.source) == (60, "model.max_memory_gb cap")
    assert device_target(None, ModelSection(max_memory_gb=None)).total_gib == 80


def test_devices_and_fit():
    from core.config import ModelSection
    from core.estimate import DEVICE_TARGETS, device_target

    assert device_target(None, ModelSection(max_memory_gb=100)).total_gib == 100
    spark = device_target("dgx-spark", ModelSection())
    assert spark.usable_gib == pytest.approx(0.8 * 128e9 / GIB)
    with pytest.raises(EstimateError, match="unknown device 'tpu'.*dgx-spark"):
        device_target("tpu", ModelSection())
    small = video_estimate(device="rtx-4090")
    assert not small.fits and small.headroom_gib < 0 and small.advice
    assert video_estimate(device="h200").fits and set(DEVICE_TARGETS) >= {"dgx-spark", "h100", "h200"}


# ---------------------------------------------------------------------------------------------- command line

REQUIRED_KEYS = {
    "params_total",
    "params_trainable",
    "visual_tokens_per_sample",
    "sequence_tokens",
    "peak_memory_gib",
    "parts_gib",
    "device_memory_gib",
    "fits",
    "headroom_gib",
}


FULL_SIZE_PRESETS = sorted(str(path.relative_to(ROOT)) for path in ROOT.glob("*_vlm/configs/*_*b_*.yaml"))


def test_every_family_ships_a_preset_per_recipe_it_can_train():
    from core.config import read_yaml
    from core.families import FAMILIES, shipped_presets

    shipped = {(path.split("/")[0], read_yaml(ROOT / path)["model"]["name"]) for path in FULL_SIZE_PRESETS}
    expected = {
        (f"{modality}_vlm", preset.model_id) for family in FAMILIES for preset in family.presets for modality in family.modalities
    }
    assert shipped == expected
    assert set(shipped_presets()) == {model_id for _, model_id in shipped}


@pytest.mark.parametrize("config", FULL_SIZE_PRESETS)
def test_estimate_json_offline_for_the_shipped_configs(config, monkeypatch, capsys, tmp_path):
    """`--estimate --json` works for every shipped full-size preset with the hub offline and no GPU, creates no run
    folder and takes no lock."""
    import importlib

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLM_RUNS_DIR", str(tmp_path / "runs"))
    main = importlib.import_module(config.split("/")[0] + ".train").main
    assert main(["--config", config, "--estimate", "--json"]) == 0
    out = capsys.readouterr().out
    payload = json.loads(out.strip().splitlines()[-1])
    assert REQUIRED_KEYS <= set(payload) and payload["fits"] is True
    assert {"weights", "adapters", "optimizer state", "gradients", "activations"} <= set(payload["parts_gib"])
    assert "peak" in out and not (tmp_path / "runs").exists()


def test_estimate_that_does_not_fit_exits_3_with_what_to_change(capsys):
    from video_vlm.train import main

    assert main(["--config", VIDEO_8B, "--estimate", "--device", "rtx-4090"]) == 3
    err = capsys.readouterr().err
    assert "does not fit" in err and "To fit, set" in err and ("qlora" in err or "num_frames" in err)


def test_unknown_model_offline_is_one_line(monkeypatch, capsys):
    from image_vlm.train import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["--config", IMAGE_7B, "--estimate", "model.name=someone/unknown-vlm"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "hf download someone/unknown-vlm config.json" in err and "HF_HUB_OFFLINE" in err


def test_a_config_that_cannot_be_estimated_still_trains(monkeypatch, capsys, tmp_path):
    """The start-of-run estimate says why it is missing and returns; nothing is written, nothing is raised."""
    import image_vlm.estimate
    from core.cli import log_estimate
    from core.runs import RunDir

    def custom_architecture(cfg, device=None, with_advice=True):
        raise KeyError("model_type 'my_vlm'")

    monkeypatch.setattr(image_vlm.estimate, "estimate", custom_architecture)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    log_estimate(run, load_config(ImageConfig, IMAGE_TINY), "image_vlm.estimate")
    assert "estimate: not available for this config" in capsys.readouterr().out
    assert run.read_estimate() is None


def test_start_of_run_estimate_and_first_step_report(tmp_path, capsys):
    """A run logs the estimate, keeps it in estimate.json, and after the first step reports the measured peak
    (here: that there is no CUDA to measure)."""
    from core.cli import log_estimate
    from core.metrics import report_measured_memory
    from core.runs import RunDir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    log_estimate(run, load_config(ImageConfig, IMAGE_TINY), "image_vlm.estimate")
    assert capsys.readouterr().out.startswith("estimate: peak ")
    assert run.read_estimate()["params_total"] > 0
    line = report_measured_memory(run)
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        assert "measured peak" in line and "measured_peak_gib" in run.read_estimate()
    else:
        assert line.startswith("memory after the first step: not measured (no CUDA here); estimated ")
