"""The training command line's start-up errors: one `error:` line and exit 2, never a traceback."""

from __future__ import annotations

import time

import pytest

from core.cli import parse_training_args
from core.config import ConfigError
from core.hub import check_model_available
from image_vlm import train as image_train

TINY = "image_vlm/configs/tiny.yaml"


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return tmp_path / "runs"


def start(capsys, *args: str) -> tuple[int, str]:
    code = image_train.main(["--config", TINY, *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.name=tiny:llama", "error: model.name: unknown tiny model 'tiny:llama'; allowed: tiny:qwen2_5_vl | tiny:internvl"),
        ("model.name=/nowhere/my-model", "error: model.name: local model folder /nowhere/my-model does not exist"),
        ("trian.max_steps=2", "error: command line: unknown key 'trian'"),
    ],
)
def test_start_up_errors_are_one_line_and_exit_2(runs, capsys, override, message):
    code, err = start(capsys, override)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith(message), err
    assert "Traceback" not in err


def test_a_wrong_value_in_the_yaml_still_names_the_file(runs, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  method: dora\n")
    code = image_train.main(["--config", str(bad), "train.max_steps=1"])
    assert code == 2 and capsys.readouterr().err.startswith(f"error: {bad}: 'finetune.method'")


def test_a_missing_data_folder_is_one_line_naming_the_download(runs, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = start(capsys, "data.root=/nowhere/wildfire", "data.synthetic=false")
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: /nowhere/wildfire: dataset folder not found")
    assert "python -m image_vlm.data download" in line and "KAGGLE_API_TOKEN" in line


def test_an_unreachable_hub_model_fails_in_seconds(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: as good as offline
    began = time.monotonic()
    with pytest.raises(ConfigError, match="cannot reach the Hugging Face Hub to fetch org/not-cached-model"):
        check_model_available("org/not-cached-model", timeout_s=3)
    assert time.monotonic() - began < 10


def test_offline_mode_and_an_uncached_model_fail_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        check_model_available("org/not-cached-model")


@pytest.mark.parametrize(
    "argv",
    [
        ["train.max_steps=3", "--run-dir", "runs/x", "logging.save_steps=1"],
        ["--run-dir", "runs/x", "train.max_steps=3", "logging.save_steps=1"],
        ["train.max_steps=3", "logging.save_steps=1", "--run-dir", "runs/x", "--config", "c.yaml"],
        ["train.max_steps=3", "--restart", "--run-dir=runs/x", "logging.save_steps=1"],
    ],
)
def test_overrides_go_anywhere_among_the_options(argv):
    args = parse_training_args(argv, "d", "default.yaml")
    assert args.run_dir == "runs/x"
    assert args.overrides == ["train.max_steps=3", "logging.save_steps=1"]


def test_a_stray_argument_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_training_args(["train.max_steps=3", "oops"], "d", "default.yaml")
    assert exit_info.value.code == 2 and "unrecognized arguments: oops" in capsys.readouterr().err


@pytest.mark.parametrize(
    "recipe, overrides, message",
    [
        ("image", ["model.attn_implementation=flash_attention_2"],
         "error: model.attn_implementation=flash_attention_2: the flash-attn package is not installed here"),
        ("video", ["model.attn_implementation=flash_attention_2"],
         "error: model.attn_implementation=flash_attention_2: the flash-attn package is not installed here"),
        ("image", ["finetune.method=qlora"], "error: finetune.method=qlora needs a CUDA GPU"),
        ("video", ["finetune.method=qlora"], "error: finetune.method=qlora needs a CUDA GPU"),
        ("image", ["train.trainer.use_liger_kernel=true"], "error: train.trainer.use_liger_kernel=true: Liger kernels need a CUDA GPU"),
        ("video", ["train.trainer.use_liger_kernel=true"], "error: train.trainer.use_liger_kernel=true: Liger kernels need a CUDA GPU"),
        ("video", ["stages=[{name: sft, train: {trainer: {use_liger_kernel: true}}}]"],
         "error: stages.0.train.trainer.use_liger_kernel=true: Liger kernels need a CUDA GPU"),
    ],
)
def test_gpu_only_features_are_refused_in_one_line_before_anything_starts(runs, capsys, tmp_path, recipe, overrides, message):
    """On a machine without CUDA (or without the feature's package) QLoRA, flash attention and Liger are refused
    before the GPU is taken or a run folder made, naming what is installed; before, each failed after start-up
    (a traceback from transformers or bitsandbytes, and a `failed` run folder)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("the refusal is for machines without CUDA")
    from video_vlm import train as video_train

    module, config = (image_train, TINY) if recipe == "image" else (video_train, "video_vlm/configs/tiny.yaml")
    run = tmp_path / "run"
    code = module.main(["--config", config, "--run-dir", str(run), f"data.root={tmp_path / 'data'}", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [err.strip()] and err.startswith(message), err
    assert not run.exists() and not (tmp_path / "data").exists(), "nothing was created"
