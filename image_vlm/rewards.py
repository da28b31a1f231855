"""Reward functions for GRPO, and the answer scoring that evaluation shares with them.

The model is asked to think inside `<REASONING>...</REASONING>` and answer
inside `<SOLUTION>Yes|No</SOLUTION>`. Every reward follows TRL's signature
`fn(completions, **kwargs) -> list[float]`: `completions` holds plain strings
or conversational messages, and `kwargs` carries the dataset columns (here
`answer`, the expected "Yes"/"No") plus TRL's own extras, which are ignored.
TRL logs each one as `rewards/<function __name__>/mean`, i.e.
`rewards/format_reward/mean` and `rewards/correctness_reward/mean`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "REASONING_START",
    "REASONING_END",
    "SOLUTION_START",
    "SOLUTION_END",
    "REWARDS",
    "completion_text",
    "parse_solution",
    "normalize_answer",
    "format_score",
    "is_degenerate",
    "score_answer",
    "format_reward",
    "correctness_reward",
    "get_reward",
    "weighted_reward",
]

REASONING_START, REASONING_END = "<REASONING>", "</REASONING>"
SOLUTION_START, SOLUTION_END = "<SOLUTION>", "</SOLUTION>"

_REASONING_BLOCK = re.compile(r"<REASONING>(.*?)</REASONING>", re.DOTALL)
_SOLUTION_BLOCK = re.compile(r"<SOLUTION>(.*?)</SOLUTION>", re.DOTALL)
# Up to this many non-space characters outside the two blocks still count as clean
# (a stray full stop or "Answer:" is harmless; a second essay is not).
_ALLOWED_STRAY_CHARS = 10
_TAG = re.compile(r"</?(?:REASONING|SOLUTION)>")
# A chunk of text that starts with a word character and repeats back to back
# at least 8 more times: "fire fire fire ...", "YesYesYes...", "ha!ha!ha!...".
_STUTTER = re.compile(r"(\w.{0,29}?)\1{8,}", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The text of one completion, whatever shape TRL hands it in.

    >>> completion_text("plain")
    'plain'
    >>> completion_text([{"role": "assistant", "content": "hi"}])
    'hi'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    'ab'
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    messages = list(completion)
    # A conversational completion is normally one assistant message; fall back
    # to every message when no role says "assistant".
    replies = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"] or messages
    return "".join(completion_text(message) for message in replies)


def parse_solution(text: str) -> str | None:
    """The stripped content of the single `<SOLUTION>` block.

    None when there is no block, more than one, or the block is empty.

    >>> parse_solution("<REASONING>red blob</REASONING><SOLUTION> Yes </SOLUTION>")
    'Yes'
    >>> parse_solution("Yes") is None
    True
    >>> parse_solution("<SOLUTION>Yes</SOLUTION><SOLUTION>No</SOLUTION>") is None
    True
    """
    if text.count(SOLUTION_START) != 1 or text.count(SOLUTION_END) != 1:
        return None
    match = _SOLUTION_BLOCK.search(text)
    if match is None:
        return None
    content = match.group(1).strip()
    return content or None


def normalize_answer(answer: str) -> str:
    """Fold case and whitespace so "yes", " YES " and "Yes" compare equal.

    >>> normalize_answer("  No\\n")
    'no'
    """
    return " ".join(answer.split()).casefold()


def is_degenerate(text: str) -> bool:
    """Whether a completion loops instead of saying something.

    Degenerate means any of: a chunk repeated back to back nine or more times;
    one non-trivial line (over 3 characters) appearing three or more times; or
    more than half of the word 4-grams being repeats (in texts of 12+ 4-grams).

    >>> is_degenerate("The tile shows green fields and a bright red patch, so fire.")
    False
    >>> is_degenerate("fire " * 30)
    True
    >>> is_degenerate("I see smoke.\\nI see smoke.\\nI see smoke.")
    True
    """
    if _STUTTER.search(text):
        return True
    # Tags count as line breaks, so "<REASONING>I see smoke." still matches a later "I see smoke.".
    untagged = _TAG.sub("\n", text)
    lines = [line.strip() for line in untagged.splitlines() if len(line.strip()) > 3]
    if lines and Counter(lines).most_common(1)[0][1] >= 3:
        return True
    words = untagged.lower().split()
    four_grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    if len(four_grams) >= 12:
        repeats = len(four_grams) - len(set(four_grams))
        if repeats / len(four_grams) > 0.5:
            return True
    return False


def format_score(text: str, reasoning: bool = True) -> float:
    """Score how well `text` follows the answer format, in [0, 1].

    With `reasoning` (reasoning, then solution), a quarter point each for:
      1. exactly one `<REASONING>` block, with something inside;
      2. exactly one `<SOLUTION>` block, with something inside;
      3. the reasoning block closing before the solution block opens;
      4. nothing substantial outside the two blocks (given only when 1-3 hold,
         so an empty completion earns nothing).
    Without it (`data.reasoning: false`, the answer alone), half a point for 2, a quarter for no
    reasoning tag at all, and a quarter for nothing substantial outside the solution (given only with 2).
    Degenerate repetition (see `is_degenerate`) zeroes the score: otherwise a
    well-tagged loop would still be rewarded and GRPO would reinforce it.

    >>> format_score("<REASONING>Red blob in a forest.</REASONING>\\n<SOLUTION>Yes</SOLUTION>")
    1.0
    >>> format_score("<SOLUTION>Yes</SOLUTION>")
    0.25
    >>> format_score("no tags at all")
    0.0
    >>> format_score("<SOLUTION>Yes</SOLUTION>", reasoning=False)
    1.0
    >>> format_score("<REASONING>Red blob.</REASONING><SOLUTION>Yes</SOLUTION>", reasoning=False)
    0.5
    >>> format_score("no tags at all", reasoning=False)
    0.0
    """
    solution = _single_block(text, SOLUTION_START, SOLUTION_END, _SOLUTION_BLOCK)
    if not reasoning:
        score = 0.0
        if solution is not None:
            score += 0.5
            if REASONING_START not in text and REASONING_END not in text:
                score += 0.25
            outside = text[: solution.start()] + text[solution.end() :]
            if len("".join(outside.split())) <= _ALLOWED_STRAY_CHARS:
                score += 0.25
        return 0.0 if score and is_degenerate(text) else score
    reasoning_block = _single_block(text, REASONING_START, REASONING_END, _REASONING_BLOCK)
    score = 0.0
    if reasoning_block is not None:
        score += 0.25
    if solution is not None:
        score += 0.25
    if reasoning_block is not None and solution is not None and reasoning_block.end() <= solution.start():
        score += 0.25
        outside = text[: reasoning_block.start()] + text[reasoning_block.end() : solution.start()] + text[solution.end() :]
        if len("".join(outside.split())) <= _ALLOWED_STRAY_CHARS:
            score += 0.25
    if score and is_degenerate(text):
        return 0.0
    return score


def score_answer(text: str, answer: str, reasoning: bool = True) -> dict[str, Any]:
    """Score one completion against the expected answer; evaluation and rewards both use this.

    Returns:
        `{"parsed": str | None, "correct": bool, "format_ok": bool}`; `format_ok`
        means full format credit (`format_score(text, reasoning) == 1.0`).

    >>> score_answer("<REASONING>Smoke plume.</REASONING><SOLUTION> YES </SOLUTION>", "Yes")
    {'parsed': 'YES', 'correct': True, 'format_ok': True}
    >>> score_answer("Yes", "Yes")
    {'parsed': None, 'correct': False, 'format_ok': False}
    >>> score_answer("<SOLUTION>No</SOLUTION>", "No", reasoning=False)
    {'parsed': 'No', 'correct': True, 'format_ok': True}
    """
    parsed = parse_solution(text)
    correct = parsed is not None and normalize_answer(parsed) == normalize_answer(str(answer))
    return {"parsed": parsed, "correct": correct, "format_ok": format_score(text, reasoning) == 1.0}


def format_reward(completions: Sequence[Any], reasoning: Sequence[bool] | bool = True, **kwargs: Any) -> list[float]:
    """GRPO reward for following the tag format, in [0, 1] per completion (see `format_score`).

    `reasoning` is the dataset's column of the same name (`data.reasoning`, one per completion) or one flag.

    >>> format_reward(["<REASONING>Green only.</REASONING><SOLUTION>No</SOLUTION>", "No"])
    [1.0, 0.0]
    >>> format_reward(["<SOLUTION>No</SOLUTION>", "<SOLUTION>No</SOLUTION>"], reasoning=[False, True])
    [1.0, 0.25]
    """
    flags = [reasoning] * len(completions) if isinstance(reasoning, bool) else [bool(r) for r in reasoning]
    return [format_score(completion_text(completion), flag) for completion, flag in zip(completions, flags)]


def correctness_reward(completions: Sequence[Any], answer: Sequence[str] | str, **kwargs: Any) -> list[float]:
    """GRPO reward: 1.0 when the `<SOLUTION>` matches the expected answer, ignoring case and spacing, else 0.0.

    Args:
        completions: One completion per sample (strings or conversational messages).
        answer: The dataset's `answer` column, one per completion (a single
            string applies to all).

    >>> correctness_reward(["<SOLUTION>yes</SOLUTION>", "<SOLUTION>No</SOLUTION>"], answer=["Yes", "Yes"])
    [1.0, 0.0]
    """
    answers = [answer] * len(completions) if isinstance(answer, str) else list(answer)
    if len(answers) != len(completions):
        raise ValueError(f"correctness_reward got {len(completions)} completions but {len(answers)} answers")
    return [
        1.0 if score_answer(completion_text(completion), expected)["correct"] else 0.0
        for completion, expected in zip(completions, answers)
    ]


REWARDS: dict[str, Callable[..., list[float]]] = {
    "format": format_reward,
    "correctness": correctness_reward,
}


def get_reward(name: str) -> Callable[..., list[float]]:
    """Look up a reward function by its registry name.

    >>> get_reward("format").__name__
    'format_reward'
    """
    try:
        return REWARDS[name]
    except KeyError:
        available = ", ".join(sorted(REWARDS))
        raise ValueError(f"unknown reward {name!r}; available rewards: {available}") from None


def weighted_reward(weights: dict[str, float], completions: Sequence[Any], **columns: Any) -> list[float]:
    """The trainer's total reward, the weighted sum of the named rewards: what DPO's pairs are ranked by.

    >>> weighted_reward({"format": 1.0, "correctness": 2.0}, ["<SOLUTION>Yes</SOLUTION>", "Yes"],
    ...                 answer=["Yes", "Yes"], reasoning=[False, False])
    [3.0, 0.0]
    """
    totals = [0.0] * len(completions)
    for name, weight in weights.items():
        for i, score in enumerate(get_reward(name)(completions, **columns)):
            totals[i] += weight * score
    return totals


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") == "text":
            parts.append(str(part.get("text") or ""))
    return "".join(parts)


def _single_block(text: str, start: str, end: str, pattern: re.Pattern[str]) -> re.Match[str] | None:
    # Counting the tags (not just regex matches) also rejects a stray unclosed duplicate.
    if text.count(start) != 1 or text.count(end) != 1:
        return None
    match = pattern.search(text)
    if match is None or not match.group(1).strip():
        return None
    return match
