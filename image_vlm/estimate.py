"""The image recipe's training step as a memory `Workload`: GRPO rollouts of one prompt image, then the loss; or,
with `method: dpo`, one DPO step: the chosen and rejected answers of each pair in one forward, and a reference pass.

    python -m image_vlm.train --config image_vlm/configs/qwen2_5_vl_7b_grpo.yaml --estimate [--json]
"""

from __future__ import annotations

import json
from pathlib import Path

from core.estimate import Estimate, Workload, estimate_config, family_of_architecture, prompt_tokens
from image_vlm.config import ImageConfig, ImageDataSection
from image_vlm.task import prompt_messages

# The Kaggle wildfire tiles are 350 x 350 pixels; the synthetic stand-in's are 64 x 64.
KNOWN_TILE_SIZE = (350, 350)
SYNTHETIC_TILE_SIZE = (64, 64)
def fixes(cfg: ImageConfig) -> list[str]:
    """The changes tried, one at a time, when a config does not fit (halving what costs memory)."""
    if cfg.method == "dpo":
        return [
            "finetune.gradient_checkpointing=true",
            "finetune.method=qlora",
            f"dpo.per_device_train_batch_size={max(1, cfg.dpo.per_device_train_batch_size // 2)}",
            f"pairs.max_new_tokens={max(8, cfg.pairs.max_new_tokens // 2)}",
            f"data.max_pixels={max(28 * 28, cfg.data.max_pixels // 2)}",
        ]
    t = cfg.train
    return [
        "finetune.gradient_checkpointing=true",
        "finetune.method=qlora",
        f"train.per_device_train_batch_size={max(1, t.per_device_train_batch_size // 2)}",
        f"train.num_generations={max(2, t.num_generations // 2)}",
        f"train.max_completion_length={max(8, t.max_completion_length // 2)}",
        f"data.max_pixels={max(28 * 28, cfg.data.max_pixels // 2)}",
    ]


def image_size(data: ImageDataSection) -> tuple[tuple[int, int], str]:
    """((height, width), where it came from): the first training image of the dataset manifest when there is
    one, else the dataset's known tile size."""
    manifest = Path(data.root) / "manifest.json"
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["splits"]
        first = next(iter(entries.get("train") or next(iter(entries.values()))))
        from PIL import Image

        with Image.open(Path(data.root) / first["path"]) as image:  # reads the header only
            return (image.height, image.width), f"image size {image.width}x{image.height} from {manifest}"
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        pass
    if data.synthetic:
        return SYNTHETIC_TILE_SIZE, "image size 64x64 (the synthetic tiles)"
    return KNOWN_TILE_SIZE, "image size 350x350 (the Kaggle wildfire tiles; no manifest yet)"


def workload(cfg: ImageConfig, config) -> Workload:
    family = family_of_architecture(cfg.model, config)
    (height, width), size_note = image_size(cfg.data)
    image = family.image_tokens(config, height, width, family.image_kwargs(cfg.data.max_pixels))
    prompt, prompt_note = prompt_tokens(cfg.model, prompt_messages(cfg.data))
    if cfg.method == "dpo":
        answer = cfg.pairs.max_new_tokens  # sampled pairs are at most this long; a file's may differ
        return Workload(
            sequences=2 * cfg.dpo.per_device_train_batch_size,  # chosen and rejected rows of each pair, one forward
            prompt_tokens=prompt,
            visual_tokens=image.tokens + image.wrapper_tokens,
            answer_tokens=answer,
            vision_patches=image.patches,
            logits_tokens=answer + 1,  # TRL scores the completion tokens only
            reference_model=True,  # a forward without gradients: its activations are not kept
            notes=(size_note, prompt_note, f"DPO: {cfg.dpo.per_device_train_batch_size} pairs a step, answers of up to "
                   f"{answer} tokens (pairs.max_new_tokens)"),
        )
    train = cfg.train
    steps_per_generation = int(train.trainer.get("steps_per_generation") or train.gradient_accumulation_steps)
    return Workload(
        sequences=train.per_device_train_batch_size,
        prompt_tokens=prompt,
        visual_tokens=image.tokens + image.wrapper_tokens,
        answer_tokens=train.max_completion_length,
        vision_patches=image.patches,
        logits_tokens=train.max_completion_length + 1,  # TRL keeps the completion's logits only
        generated_sequences=train.per_device_train_batch_size * steps_per_generation,
        reference_model=train.beta > 0,
        notes=(size_note, prompt_note),
    )


def estimate(cfg: ImageConfig, device: str | None = None, with_advice: bool = True) -> Estimate:
    """The memory estimate of training `cfg`; with advice on what to change when it does not fit."""
    return estimate_config(cfg, workload, fixes, device, with_advice)
