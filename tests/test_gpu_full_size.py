"""The shipped presets at full size, through the product's CLI: Qwen2.5-VL-7B GRPO (bf16 LoRA, QLoRA) and
InternVL3-8B SFT (bf16 LoRA, bf16 full fine-tuning), then every other family's preset (Qwen3-VL, InternVL3.5,
SmolVLM2, Gemma 3) with bf16 LoRA in each recipe its inputs allow, each one optimizer step on synthetic data.

No hub on a lent GPU, so `core.architectures.write_random_checkpoint` writes each architecture with random bf16
weights into a model folder (about 16 GB), which the run loads as `model.name=<folder>`: the real loading code,
the pre-launch estimate, the memory cap and the final save all run at 7-8B. One model folder exists at a time (the
class fixture removes it), so the disk needs about 35 GB with the full fine-tune's saved model.

Each run prints its estimated and measured peak; a measured peak far above the estimate fails, because a user
trusts the estimate to choose a batch size. Sized for a lent H100/H200: about three minutes for the first four runs
(model folders written at disk speed, one step each, short completions and four frames a clip); the seven family
rows write four more folders (2-9B each). Not yet run on a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from core.runs import RunDir

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: run `make test-gpu` on a GPU machine"),
]

IMAGE_PRESET = "image_vlm/configs/qwen2_5_vl_7b_grpo.yaml"
VIDEO_PRESET = "video_vlm/configs/internvl3_8b_sft.yaml"
# A measured peak this much above the estimate means the estimate would let a user launch a run that runs out.
ESTIMATE_TOLERANCE = 1.25
NEEDS_BITSANDBYTES = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed (the gpu extra)")


def image_overrides(model: Path, data: Path) -> list[str]:
    """One GRPO step of the shipped 7B preset: 2 tiles of the dataset's 350 px x 2 completions of 32 tokens."""
    from image_vlm.synthetic import make_synthetic_dataset

    if not data.exists():
        make_synthetic_dataset(data, per_class=4, size=350)
    return [
        f"model.name={model}", f"data.root={data}",
        "train.max_steps=1", "train.per_device_train_batch_size=2", "train.gradient_accumulation_steps=1",
        "train.num_generations=2", "train.max_completion_length=32", "logging.save_steps=1", "logging.report_to=none",
    ]  # fmt: skip


def video_overrides(model: Path, data: Path) -> list[str]:
    """One SFT step of the shipped 8B preset on 448 px clips, 4 frames a sample (4 x 256 image tokens)."""
    from video_vlm.synthetic import make_synthetic_dataset

    if not data.exists():
        make_synthetic_dataset(data, n=6, num_frames=12, size=448)
    return [
        f"model.name={model}", f"data.root={data}", "data.num_frames=4",
        "train.max_steps=1", "train.gradient_accumulation_steps=1", "logging.save_steps=1", "logging.report_to=none",
    ]  # fmt: skip


def train(module: str, preset: str, run: RunDir, overrides: list[str]) -> str:
    """Run the recipe's CLI to a finished run; its output."""
    result = run_cli(module, "--config", preset, "--run-dir", str(run.path), *overrides, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert run.read_status()["state"] == "finished"
    return result.stdout


def assert_estimate_holds(run: RunDir) -> None:
    """The measured peak, printed beside the estimate, does not exceed it by more than the tolerance."""
    estimate = run.read_estimate()
    assert estimate, "the run recorded no estimate"
    measured = estimate["measured_peak_gib"]["allocated"]
    print(json.dumps({"run": run.path.name, "estimated_peak_gib": estimate["peak_memory_gib"], "measured": estimate["measured_peak_gib"]}))
    assert 0 < measured <= estimate["peak_memory_gib"] * ESTIMATE_TOLERANCE, (
        f"measured peak {measured:.1f} GiB against an estimate of {estimate['peak_memory_gib']:.1f} GiB"
    )


def model_folder(tmp_path_factory, kind: str):
    from core.architectures import write_random_checkpoint

    folder = write_random_checkpoint(kind, tmp_path_factory.mktemp(f"{kind}-full-size") / "model")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class TestQwen25VL7B:
    @pytest.fixture(scope="class")
    def qwen(self, tmp_path_factory):
        yield from model_folder(tmp_path_factory, "qwen2_5_vl")

    def test_bf16_lora_grpo_step_within_the_estimate(self, qwen, tmp_path):
        run = RunDir(tmp_path / "run")
        train("image_vlm.train", IMAGE_PRESET, run, image_overrides(qwen, tmp_path / "wildfire"))
        assert (run.adapter_dir / "adapter_config.json").exists()
        assert_estimate_holds(run)

    @NEEDS_BITSANDBYTES
    def test_qlora_keeps_the_vision_tower_out_of_4bit(self, qwen, tmp_path):
        run = RunDir(tmp_path / "run")
        output = train("image_vlm.train", IMAGE_PRESET, run, [*image_overrides(qwen, tmp_path / "wildfire"), "finetune.method=qlora"])
        assert "linear layers in 4-bit, 0 of them in the vision tower or projector" in output, output[-3000:]
        assert_estimate_holds(run)


class TestInternVL3_8B:
    @pytest.fixture(scope="class")
    def internvl(self, tmp_path_factory):
        yield from model_folder(tmp_path_factory, "internvl")

    def test_bf16_lora_sft_step_within_the_estimate(self, internvl, tmp_path):
        run = RunDir(tmp_path / "run")
        train("video_vlm.train", VIDEO_PRESET, run, video_overrides(internvl, tmp_path / "dashcam"))
        assert (run.adapter_dir / "adapter_config.json").exists()
        assert_estimate_holds(run)

    def test_bf16_full_fine_tuning_step_or_the_estimate_says_why_not(self, internvl, tmp_path):
        overrides = [*video_overrides(internvl, tmp_path / "dashcam"), "finetune.method=full"]
        check = run_cli("video_vlm.train", "--config", VIDEO_PRESET, "--estimate", *overrides)
        if check.returncode == 3:
            pytest.skip(f"full fine-tuning of 8B does not fit this GPU, by the estimate: {check.stdout.strip().splitlines()[-1]}")
        assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
        run = RunDir(tmp_path / "run")
        train("video_vlm.train", VIDEO_PRESET, run, overrides)
        assert run.final_artifact() == run.model_dir
        assert_estimate_holds(run)


def family_presets() -> list[tuple[str, str, str]]:
    """(tiny kind, recipe module, shipped preset file) of every shipped model of every family but the two above, one
    row per recipe its inputs allow."""
    from core.config import read_yaml
    from core.families import FAMILIES

    root = Path(__file__).resolve().parents[1]
    by_model = {(path.parent.parent.name, read_yaml(path)["model"]["name"]): path for path in root.glob("*_vlm/configs/*_*b_*.yaml")}
    rows = []
    for family in FAMILIES:
        if family.key in ("qwen2_5_vl", "internvl"):
            continue
        for shipped in family.presets:
            for modality in family.modalities:
                preset = by_model[(f"{modality}_vlm", shipped.model_id)]
                rows.append((family.key, f"{modality}_vlm.train", str(preset.relative_to(root))))
    return rows


def folder_bytes(kind: str, model_id: str) -> float:
    """Disk a random bf16 folder of the preset takes: two bytes a weight, and a twentieth for the rest."""
    from core.architectures import meta_parameter_counts, random_checkpoint_family

    family, preset = random_checkpoint_family(kind, model_id)
    return meta_parameter_counts(family.transformers_class(), preset.config())["total"] * 2 * 1.05


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory):
    """One random-weight full-size folder at a time: the previous model's is removed before the next is written."""
    written: dict[str, Path] = {}

    def folder(kind: str, model_id: str) -> Path:
        from core.architectures import write_random_checkpoint

        for old in [k for k in written if k != model_id]:
            shutil.rmtree(written.pop(old), ignore_errors=True)
        if model_id not in written:
            parent = tmp_path_factory.mktemp(f"{kind}-full-size")
            need, free = folder_bytes(kind, model_id), shutil.disk_usage(parent).free
            if need > free:  # Gemma 4 31B's 62 GB beside the machine's own files
                pytest.skip(f"{model_id}: its random bf16 folder needs about {need / 1e9:.0f} GB, {free / 1e9:.0f} GB "
                            f"free on {parent}")
            written[model_id] = write_random_checkpoint(kind, parent / "model", model_id=model_id)
        return written[model_id]

    yield folder
    for path in written.values():
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("kind, module, preset", family_presets(), ids=lambda value: str(value).split("/")[-1])
def test_every_family_preset_takes_a_bf16_lora_step_within_the_estimate(kind, module, preset, family_folders, tmp_path):
    """Every other shipped model (Qwen3-VL, InternVL3.5, SmolVLM2, Gemma 3, Qwen3.5, Gemma 4) at full size, in each
    recipe its inputs allow."""
    from core.config import read_yaml

    folder = family_folders(kind, read_yaml(Path(__file__).resolve().parents[1] / preset)["model"]["name"])
    overrides = image_overrides(folder, tmp_path / "wildfire") if module.startswith("image") else video_overrides(folder, tmp_path / "dashcam")
    run = RunDir(tmp_path / "run")
    train(module, preset, run, overrides)
    assert (run.adapter_dir / "adapter_config.json").exists()
    assert_estimate_holds(run)
