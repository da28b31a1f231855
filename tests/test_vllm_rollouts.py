"""vLLM rollouts, as an option: the config's fields reach TRL's GRPOConfig, and a machine that cannot run them is
told so in one line at launch, before the GPU lock, the run folder or any weights."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import IMAGE_SMOKE, run_cli
from core.config import ConfigError, load_config
from core.runs import RunDir
from image_vlm import train as image_train
from image_vlm import vllm_rollouts
from image_vlm.config import ImageConfig

TINY = "image_vlm/configs/tiny.yaml"


def trainer_args(tmp_path, *overrides: str):
    cfg = load_config(ImageConfig, TINY, ["logging.report_to=none", *overrides])
    return image_train.grpo_arguments(cfg, RunDir(tmp_path / "run"))


# ---------------------------------------------------------------------------------------------- the mapping


def test_vllm_is_off_by_default(tmp_path):
    assert trainer_args(tmp_path).use_vllm is False


def test_use_vllm_alone_is_colocate_mode(tmp_path):
    args = trainer_args(tmp_path, "train.use_vllm=true")
    assert (args.use_vllm, args.vllm_mode) == (True, "colocate")
    assert args.vllm_gpu_memory_utilization == 0.3
    args = trainer_args(tmp_path, "train.use_vllm=true", "train.vllm_gpu_memory_utilization=0.5")
    assert args.vllm_gpu_memory_utilization == 0.5


def test_a_server_url_is_server_mode(tmp_path):
    args = trainer_args(tmp_path, "train.use_vllm=true", "train.vllm_server_url=http://vllm-host:8000/")
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url) == (True, "server", "http://vllm-host:8000")


def test_other_vllm_arguments_still_pass_through(tmp_path):
    args = trainer_args(
        tmp_path, "train.use_vllm=true", "train.vllm_server_url=http://localhost:8000", "train.trainer.vllm_server_timeout=30"
    )
    assert args.vllm_server_timeout == 30


@pytest.mark.parametrize("key", ["use_vllm", "vllm_mode", "vllm_server_base_url"])
def test_the_vllm_switch_is_refused_in_the_pass_through(key):
    with pytest.raises(ConfigError, match="train.use_vllm"):
        load_config(ImageConfig, TINY, [f"train.trainer.{key}=x"])


def test_a_server_url_must_be_http():
    with pytest.raises(ConfigError, match=r"train\.vllm_server_url.*http://"):
        load_config(ImageConfig, TINY, ["train.use_vllm=true", "train.vllm_server_url=localhost:8000"])


# ---------------------------------------------------------------------------------------------- the launch


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_cli_without_vllm_exits_2_with_one_line_before_the_lock(tmp_path):
    runs = tmp_path / "runs"
    run = runs / "image-vllm"
    result = run_cli(
        "image_vlm.train", "--config", TINY, "--run-dir", str(run), "train.use_vllm=true", env={"VLM_RUNS_DIR": str(runs)}
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: train.use_vllm needs vllm")
    assert "pip install 'vllm>=0.27,<=0.31'" in lines[0] and "torch 2.15.0" in lines[0]
    assert not runs.exists(), "neither the GPU lock nor the run folder may be created"


@pytest.fixture
def launch_spy(monkeypatch):
    """main() with the GPU lock and training replaced by recorders: a refused launch must reach neither."""
    reached: list[str] = []
    monkeypatch.setattr("core.cli.acquire_gpu_lock", lambda *a, **k: reached.append("gpu lock"))
    monkeypatch.setattr(image_train, "train", lambda *a, **k: reached.append("train"))
    return reached


def pretend_vllm_is_installed(monkeypatch, cuda: bool) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else find_spec(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)


def test_colocate_mode_on_cpu_is_refused_before_the_lock(monkeypatch, tmp_path, launch_spy, capsys):
    pretend_vllm_is_installed(monkeypatch, cuda=False)
    code = image_train.main(["--config", TINY, "--run-dir", str(tmp_path / "run"), "train.use_vllm=true"])
    assert code == 2 and launch_spy == []
    err = capsys.readouterr().err.strip()
    assert err == "error: train.use_vllm (vLLM colocate mode) needs a CUDA GPU; set train.use_vllm=false on CPU"
    assert not (tmp_path / "run").exists()


def test_server_mode_on_cpu_is_refused_too(monkeypatch, tmp_path, launch_spy, capsys):
    # TRL's VLLMClient syncs the weights over NCCL, which needs a CUDA device on the trainer's side.
    pretend_vllm_is_installed(monkeypatch, cuda=False)
    code = image_train.main(
        ["--config", TINY, "--run-dir", str(tmp_path / "run"), "train.use_vllm=true", "train.vllm_server_url=http://localhost:8000"]
    )
    assert code == 2 and launch_spy == []
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: train.vllm_server_url (vLLM server mode) needs a CUDA GPU") and "\n" not in err


def test_vllm_and_cuda_present_let_the_launch_go_on(monkeypatch, tmp_path, launch_spy):
    pretend_vllm_is_installed(monkeypatch, cuda=True)
    cfg = load_config(ImageConfig, TINY, ["train.use_vllm=true"])
    assert vllm_rollouts.vllm_problem(cfg.train) is None
    image_train.main(["--config", TINY, "--run-dir", str(tmp_path / "run"), "train.use_vllm=true"])
    assert launch_spy[:1] == ["gpu lock"]  # past the preflight: the launch takes the GPU


def test_without_use_vllm_nothing_is_checked(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a: pytest.fail("looked for vllm although use_vllm is off"))
    assert vllm_rollouts.vllm_problem(load_config(ImageConfig, TINY).train) is None


# ---------------------------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: run `make test-gpu` on a GPU machine")
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (see the README's vLLM rollouts)")
def test_two_grpo_steps_with_vllm_colocate_rollouts(tmp_path):
    run = RunDir(tmp_path / "run")
    result = run_cli(
        "image_vlm.train", "--config", TINY, "--run-dir", str(run.path), *IMAGE_SMOKE, "model.dtype=bfloat16",
        "train.max_steps=2", "logging.save_steps=2", "train.max_completion_length=16",
        "train.use_vllm=true", "train.vllm_gpu_memory_utilization=0.2",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert run.read_status()["state"] == "finished"
    assert (run.adapter_dir / "adapter_config.json").exists()
