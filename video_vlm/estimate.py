"""The video recipe's training step as a memory `Workload`: one SFT forward and backward over the clips.

    python -m video_vlm.train --config video_vlm/configs/internvl3_8b_sft.yaml --estimate [--json]
"""

from __future__ import annotations

from core.estimate import (
    Estimate,
    EstimateError,
    Workload,
    estimate_config,
    frame_side,
    internvl_frame_tokens,
    prompt_tokens,
)
from video_vlm.config import VideoConfig
from video_vlm.task import load_task_schema, prompt_messages

# "Frame3: <img>" ... "</img>\n" around each frame's image tokens.
FRAME_WRAPPER_TOKENS = 7


def fixes(cfg: VideoConfig) -> list[str]:
    """The changes tried, one at a time, when a config does not fit (halving what costs memory)."""
    return [
        "finetune.gradient_checkpointing=true",
        "finetune.method=qlora",
        f"train.per_device_train_batch_size={max(1, cfg.train.per_device_train_batch_size // 2)}",
        f"data.num_frames={max(2, cfg.data.num_frames // 2)}",
    ]


def workload(cfg: VideoConfig, config) -> Workload:
    if not hasattr(config, "downsample_ratio"):
        raise EstimateError(f"{cfg.model.name}: video tokens are known for InternVL-style processors only")
    per_frame, patches = internvl_frame_tokens(config)
    # The longest stage decides: a curriculum's stages may sample more frames or batch more clips.
    stages = [cfg.stage_sections(stage) for stage in cfg.stages] or [(cfg.data, cfg.train)]
    data, train = max(stages, key=lambda s: s[0].num_frames * s[1].per_device_train_batch_size)
    prompt, prompt_note = prompt_tokens(cfg.model, prompt_messages(data, load_task_schema(data)))
    frames = data.num_frames
    visual = frames * (per_frame + FRAME_WRAPPER_TOKENS)
    answer = cfg.eval.max_new_tokens
    return Workload(
        sequences=train.per_device_train_batch_size,
        prompt_tokens=prompt,
        visual_tokens=visual,
        answer_tokens=answer,
        vision_patches=frames * patches,
        logits_tokens=prompt + visual + answer,  # the SFT loss and token accuracy read every position's logits
        notes=(
            f"{frames} frames x {per_frame} tokens (each frame is one {frame_side(config)} px tile)",
            prompt_note,
            f"answer budget eval.max_new_tokens={answer}",
        ),
    )


def estimate(cfg: VideoConfig, device: str | None = None, with_advice: bool = True) -> Estimate:
    """The memory estimate of training `cfg`; with advice on what to change when it does not fit."""
    return estimate_config(cfg, workload, fixes, device, with_advice)
