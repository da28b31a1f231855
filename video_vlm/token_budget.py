"""The tokens one training sample needs, measured before launch: frames, prompt and answer against `train.max_length`.

Samples are never truncated (cutting video tokens breaks the model's input), so training finds the ones that
cannot fit before it starts (`over_long_items`) and skips them the way the collator skips an unreadable clip.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.generation import answer_affixes, build_inputs
from video_vlm.collator import answer_labels
from video_vlm.config import VideoDataSection
from video_vlm.schema import SchemaSpec
from video_vlm.task import SampledClip, prompt_messages


def token_budget(processor, data: VideoDataSection, schema: SchemaSpec, sample_label: dict) -> dict[str, Any]:
    """Tokens one training sample needs: measured with the real processor on blank frames of the configured size.

    Frames are `frame_max_side` pixels square, the largest a clip can give, so the estimate is an upper bound
    for processors whose token count grows with the picture (Qwen2.5-VL); InternVL gives every frame the same.

    Returns:
        frames, tokens_per_frame, video_tokens, prompt_tokens (text and template), answer_tokens (label JSON
        and end token), total.
    """
    side = data.frame_max_side
    frames = np.zeros((data.num_frames, side, side, 3), dtype=np.uint8)
    clip = SampledClip(frames, [index + 0.5 for index in range(data.num_frames)])  # one frame a second
    with_video = build_inputs(processor, [prompt_messages(data, schema, video=clip)])["input_ids"].shape[1]
    text_only = processor.apply_chat_template(prompt_messages(data, schema), tokenize=False, add_generation_prompt=True)
    prompt_tokens = len(processor.tokenizer(text_only, add_special_tokens=False)["input_ids"])
    answer_tokens = len(answer_labels(processor.tokenizer, schema, sample_label, answer_affixes(processor))[0])
    video_tokens = with_video - prompt_tokens
    return {
        "frames": data.num_frames,
        "tokens_per_frame": round(video_tokens / data.num_frames, 1),
        "video_tokens": video_tokens,
        "prompt_tokens": prompt_tokens,
        "answer_tokens": answer_tokens,
        "total": with_video + answer_tokens,
    }


def over_long_items(
    processor, data: VideoDataSection, schema: SchemaSpec, items: list, max_length: int
) -> tuple[dict[str, Any], list[tuple[Any, int]]]:
    """(the token budget of the shortest answer, [(item, tokens its sample needs)] for each item past `max_length`).

    Exact, and cheap for a large dataset: an answer is tokenised only when its UTF-8 bytes could pass the room the
    frames and prompt leave (no tokenizer makes more tokens than bytes, plus one for a leading-space marker).
    """
    shortest = min(items, key=lambda item: len(schema.render_label(item.label)))
    budget = token_budget(processor, data, schema, shortest.label)
    fixed = budget["total"] - budget["answer_tokens"]
    affixes = answer_affixes(processor)
    over = []
    for item in items:
        if fixed + len((affixes[0] + schema.render_label(item.label) + affixes[1]).encode("utf-8")) + 1 <= max_length:
            continue
        needed = fixed + len(answer_labels(processor.tokenizer, schema, item.label, affixes)[0])
        if needed > max_length:
            over.append((item, needed))
    return budget, over


def format_budget(budget: dict[str, Any], max_length: int) -> str:
    """One line for the launch log.

    >>> format_budget({"frames": 4, "tokens_per_frame": 10.0, "video_tokens": 40, "prompt_tokens": 300,
    ...                "answer_tokens": 60, "total": 400}, 512)
    'token budget per sample: 4 frames x 10.0 tokens = 40 video + 300 prompt + 60 answer = 400 of train.max_length 512'
    """
    return (
        f"token budget per sample: {budget['frames']} frames x {budget['tokens_per_frame']} tokens = "
        f"{budget['video_tokens']} video + {budget['prompt_tokens']} prompt + {budget['answer_tokens']} answer = "
        f"{budget['total']} of train.max_length {max_length}"
    )


def budget_problem(budget: dict[str, Any], max_length: int) -> str | None:
    """Why a sample would not fit, with what to change; None when it fits."""
    if budget["total"] <= max_length:
        return None
    return (
        f"one sample needs {budget['total']} tokens ({budget['video_tokens']} for {budget['frames']} frames, "
        f"{budget['prompt_tokens']} prompt, {budget['answer_tokens']} answer) but train.max_length is {max_length}. "
        f"Raise train.max_length to at least {budget['total']}, or lower data.num_frames or data.frame_max_side. "
        "Samples are never truncated: cutting video tokens would break the model's input."
    )
