"""The video recipe's training step as a memory `Workload`: one SFT forward and backward over the clips, or, with
`method: dpo`, the larger of an SFT stage's step and a DPO step (chosen and rejected rows of each pair in one
forward, and a reference pass).

    python -m video_vlm.train --config video_vlm/configs/internvl3_8b_sft.yaml --estimate [--json]
"""

from __future__ import annotations

from core.estimate import Estimate, EstimateError, Workload, estimate_config, family_of_architecture, prompt_tokens
from video_vlm.config import VideoConfig
from video_vlm.task import load_task_schema, prompt_messages


def fixes(cfg: VideoConfig) -> list[str]:
    """The changes tried, one at a time, when a config does not fit (halving what costs memory)."""
    dpo = [f"dpo.per_device_train_batch_size={max(1, cfg.dpo.per_device_train_batch_size // 2)}"] if cfg.method == "dpo" else []
    return dpo + [
        "finetune.gradient_checkpointing=true",
        "finetune.method=qlora",
        f"train.per_device_train_batch_size={max(1, cfg.train.per_device_train_batch_size // 2)}",
        f"data.num_frames={max(2, cfg.data.num_frames // 2)}",
    ]


def workload(cfg: VideoConfig, config) -> Workload:
    family = family_of_architecture(cfg.model, config)
    if family.video_tokens is None:
        raise EstimateError(f"{cfg.model.name}: {family.title} takes no video input")
    stages = [cfg.stage_sections(stage) for stage in cfg.stages] or [(cfg.data, cfg.train)]
    if cfg.method == "dpo" and not cfg.stages:
        stages = []  # DPO alone: no SFT step
    steps = [clip_workload(cfg, config, family, data, train.per_device_train_batch_size, cfg.eval.max_new_tokens, "SFT")
             for data, train in stages]
    if cfg.method == "dpo":
        # Chosen and rejected rows of each pair in one forward; pairs sampled up to pairs.max_new_tokens.
        steps.append(clip_workload(cfg, config, family, cfg.final_data, 2 * cfg.dpo.per_device_train_batch_size,
                                   cfg.pairs.max_new_tokens, "DPO", reference=True))
    return max(steps, key=lambda step: step.sequences * step.sequence_tokens)


def clip_workload(cfg: VideoConfig, config, family, data, sequences: int, answer: int, kind: str,
                  reference: bool = False) -> Workload:
    """One training step over `sequences` clip samples of `data`, with answers of up to `answer` tokens."""
    prompt, prompt_note = prompt_tokens(cfg.model, prompt_messages(data, load_task_schema(data)))
    frames, side = data.num_frames, data.frame_max_side  # square frames at the largest side: an upper bound
    times = [index + 0.5 for index in range(frames)]  # the count does not depend on when the frames were taken
    clip = family.video_tokens(config, frames, side, side, family.video_kwargs([(frames, side, side)], [times]))
    visual = clip.tokens + clip.wrapper_tokens
    budget = "eval.max_new_tokens" if kind == "SFT" else "pairs.max_new_tokens"
    return Workload(
        sequences=sequences,
        prompt_tokens=prompt,
        visual_tokens=visual,
        answer_tokens=answer,
        vision_patches=clip.patches,
        # The SFT loss and token accuracy read every position's logits; TRL's DPO scores the completion only.
        logits_tokens=prompt + visual + answer if kind == "SFT" else answer + 1,
        reference_model=reference,
        notes=(
            f"{frames} frames of at most {side} px: {clip.tokens} visual tokens ({family.title}'s processor rules)",
            prompt_note,
            f"{kind} step: {sequences} sequences, answer budget {budget}={answer}",
        ),
    )


def estimate(cfg: VideoConfig, device: str | None = None, with_advice: bool = True) -> Estimate:
    """The memory estimate of training `cfg`; with advice on what to change when it does not fit."""
    return estimate_config(cfg, workload, fixes, device, with_advice)
