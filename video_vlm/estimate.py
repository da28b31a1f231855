"""The video recipe's training step as a memory `Workload`: one SFT forward and backward over the clips.

    python -m video_vlm.train --config video_vlm/configs/internvl3_8b_sft.yaml --estimate [--json]
"""

from __future__ import annotations

from core.estimate import Estimate, EstimateError, Workload, estimate_config, family_of_architecture, prompt_tokens
from video_vlm.config import VideoConfig
from video_vlm.task import load_task_schema, prompt_messages


def fixes(cfg: VideoConfig) -> list[str]:
    """The changes tried, one at a time, when a config does not fit (halving what costs memory)."""
    return [
        "finetune.gradient_checkpointing=true",
        "finetune.method=qlora",
        f"train.per_device_train_batch_size={max(1, cfg.train.per_device_train_batch_size // 2)}",
        f"data.num_frames={max(2, cfg.data.num_frames // 2)}",
    ]


def workload(cfg: VideoConfig, config) -> Workload:
    family = family_of_architecture(cfg.model, config)
    if family.video_tokens is None:
        raise EstimateError(f"{cfg.model.name}: {family.title} takes no video input")
    # The longest stage decides: a curriculum's stages may sample more frames or batch more clips.
    stages = [cfg.stage_sections(stage) for stage in cfg.stages] or [(cfg.data, cfg.train)]
    data, train = max(stages, key=lambda s: s[0].num_frames * s[1].per_device_train_batch_size)
    prompt, prompt_note = prompt_tokens(cfg.model, prompt_messages(data, load_task_schema(data)))
    frames, side = data.num_frames, data.frame_max_side  # square frames at the largest side: an upper bound
    times = [index + 0.5 for index in range(frames)]  # the count does not depend on when the frames were taken
    clip = family.video_tokens(config, frames, side, side, family.video_kwargs([(frames, side, side)], [times]))
    visual = clip.tokens + clip.wrapper_tokens
    answer = cfg.eval.max_new_tokens
    return Workload(
        sequences=train.per_device_train_batch_size,
        prompt_tokens=prompt,
        visual_tokens=visual,
        answer_tokens=answer,
        vision_patches=clip.patches,
        logits_tokens=prompt + visual + answer,  # the SFT loss and token accuracy read every position's logits
        notes=(
            f"{frames} frames of at most {side} px: {clip.tokens} visual tokens ({family.title}'s processor rules)",
            prompt_note,
            f"answer budget eval.max_new_tokens={answer}",
        ),
    )


def estimate(cfg: VideoConfig, device: str | None = None, with_advice: bool = True) -> Estimate:
    """The memory estimate of training `cfg`; with advice on what to change when it does not fit."""
    return estimate_config(cfg, workload, fixes, device, with_advice)
