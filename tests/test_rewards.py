"""GRPO rewards: every completion shape TRL produces, partial format credit, repetition, forgiving answer matching."""

from __future__ import annotations

import pickle

import pytest

from image_vlm.rewards import (
    REWARDS,
    completion_text,
    correctness_reward,
    format_reward,
    format_score,
    get_reward,
    is_degenerate,
    parse_solution,
    score_answer,
)

GOOD = (
    "<REASONING>The tile shows green vegetation with a bright red-orange patch near the lower right, "
    "consistent with active fire.</REASONING>\n<SOLUTION>Yes</SOLUTION>"
)


def as_message(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def as_parts(text: str) -> list[dict]:
    middle = len(text) // 2
    return [{"role": "assistant", "content": [{"type": "text", "text": text[:middle]}, {"type": "text", "text": text[middle:]}]}]


@pytest.mark.parametrize("shape", [str, as_message, as_parts])
def test_every_completion_shape_scores_the_same(shape) -> None:
    completions = [shape(GOOD), shape("Yes")]
    assert format_reward(completions) == [1.0, 0.0]
    assert correctness_reward(completions, answer=["Yes", "Yes"]) == [1.0, 0.0]


def test_completion_text_edge_shapes() -> None:
    assert completion_text(None) == ""
    assert completion_text({"role": "assistant", "content": "x"}) == "x"
    # Image parts and non-assistant turns carry no answer text.
    mixed = [
        {"role": "user", "content": "ignored"},
        {"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": "kept"}]},
    ]
    assert completion_text(mixed) == "kept"


def test_trl_extra_kwargs_are_ignored() -> None:
    extras = {"prompts": ["p"], "completion_ids": [[1]], "trainer_state": None, "log_extra": None, "label": ["wildfire"]}
    assert format_reward([GOOD], **extras) == [1.0]
    assert correctness_reward([GOOD], answer=["Yes"], **extras) == [1.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<SOLUTION>Yes</SOLUTION>", "Yes"),
        ("<SOLUTION>\n  No \n</SOLUTION>", "No"),
        ("<SOLUTION></SOLUTION>", None),
        ("<SOLUTION>Yes", None),
        ("<SOLUTION>Yes</SOLUTION> <SOLUTION>No</SOLUTION>", None),
        ("Yes", None),
    ],
)
def test_parse_solution(text: str, expected: str | None) -> None:
    assert parse_solution(text) == expected


@pytest.mark.parametrize("said", ["Yes", "yes", " YES ", "\nyEs\t"])
def test_correctness_ignores_case_and_whitespace(said: str) -> None:
    assert correctness_reward([f"<REASONING>r</REASONING><SOLUTION>{said}</SOLUTION>"], answer=["Yes"]) == [1.0]


def test_correctness_rejects_wrong_or_hedged_answers() -> None:
    completions = [
        "<SOLUTION>No</SOLUTION>",
        "<SOLUTION>Yes or No</SOLUTION>",
        "<SOLUTION>Yes</SOLUTION><SOLUTION>No</SOLUTION>",
        "Yes",
    ]
    assert correctness_reward(completions, answer=["Yes"] * 4) == [0.0, 0.0, 0.0, 0.0]


def test_correctness_checks_lengths_and_broadcasts_a_single_answer() -> None:
    assert correctness_reward(["<SOLUTION>No</SOLUTION>"] * 2, answer="No") == [1.0, 1.0]
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        correctness_reward(["a", "b"], answer=["Yes"])


@pytest.mark.parametrize(
    ("text", "score"),
    [
        (GOOD, 1.0),
        ("  \n" + GOOD + "\n", 1.0),
        ("Answer: " + GOOD, 1.0),  # A few stray characters are tolerated.
        (GOOD + "\nI hope this long explanation after the answer is helpful to you.", 0.75),
        ("<SOLUTION>Yes</SOLUTION><REASONING>after</REASONING>", 0.5),
        ("<REASONING>only thinking</REASONING>", 0.25),
        ("<REASONING>   </REASONING><SOLUTION>Yes</SOLUTION>", 0.25),
        ("<REASONING>a</REASONING><REASONING>b</REASONING><SOLUTION>Yes</SOLUTION>", 0.25),
        ("<REASONING>cut off by the token limit", 0.0),
        ("", 0.0),
    ],
)
def test_format_partial_credit(text: str, score: float) -> None:
    assert format_score(text) == score
    assert 0.0 <= score <= 1.0


@pytest.mark.parametrize(
    "looping",
    [
        "fire " * 40,
        "YesYesYesYesYesYesYesYesYesYes",
        "I see smoke.\nThere is a field.\nI see smoke.\nI see smoke.",
        "the red patch is fire and " * 6,
    ],
)
def test_repetition_is_degenerate(looping: str) -> None:
    assert is_degenerate(looping)
    wrapped = f"<REASONING>{looping}</REASONING><SOLUTION>Yes</SOLUTION>"
    assert format_score(wrapped) == 0.0
    assert score_answer(wrapped, "Yes") == {"parsed": "Yes", "correct": True, "format_ok": False}


@pytest.mark.parametrize(
    "natural",
    [
        GOOD,
        "The image shows a forest. The image shows no smoke, no flames and no burn scars. "
        "Roads and fields look normal, so there is no sign of a wildfire in this region.",
        "1. Colour: mostly green.\n2. Texture: uniform canopy.\n3. Anomalies: none.\nConclusion: no fire.",
        "Coordinates 100000 and 200000 appear in the metadata... ---------- end of notes",
    ],
)
def test_natural_text_is_not_degenerate(natural: str) -> None:
    assert not is_degenerate(natural)


def test_score_answer_is_what_correctness_uses() -> None:
    for text, answer in [(GOOD, "Yes"), (GOOD, "No"), ("<SOLUTION>no</SOLUTION>", "No"), ("nothing", "Yes")]:
        assert correctness_reward([text], answer=[answer]) == [float(score_answer(text, answer)["correct"])]
    assert score_answer(GOOD, "no") == {"parsed": "Yes", "correct": False, "format_ok": True}


def test_registry() -> None:
    assert REWARDS == {"format": format_reward, "correctness": correctness_reward}
    assert get_reward("correctness") is correctness_reward
    with pytest.raises(ValueError, match="unknown reward 'length'; available rewards: correctness, format"):
        get_reward("length")
    # TRL logs rewards/<__name__>/mean and may pickle reward functions for worker processes.
    for name, function in REWARDS.items():
        assert function.__name__ == f"{name}_reward"
        assert pickle.loads(pickle.dumps(function)) is function
