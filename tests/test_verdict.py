"""core.verdict: the intervals and the rule that turn an evaluation into a verdict a reader can trust."""

from __future__ import annotations

import pytest

from core.verdict import (
    BETTER,
    CONSTANT,
    INDISTINGUISHABLE,
    WORSE,
    bootstrap_interval,
    constant_answer,
    mean_of_columns,
    paired_bootstrap_interval,
    paired_rate_interval,
    verdict,
    wilson_interval,
)


def test_wilson_for_half_of_48_is_the_textbook_interval():
    # p = 0.5, n = 48: centre 0.5, half-width 1.96·sqrt(0.25/48 + 1.96²/(4·48²)) / (1 + 1.96²/48) = 0.1361.
    assert wilson_interval(24, 48) == pytest.approx((0.3639, 0.6361), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)


def test_paired_difference_matches_a_published_example():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables", the Cavo et al. paired table.
    tuned = [True] * 65 + [False] * 96
    base = [True] * 59 + [False] * 6 + [True] * 16 + [False] * 80
    assert paired_rate_interval(base, tuned) == pytest.approx((-0.1186, -0.0046), abs=1e-4)


def test_a_constant_no_on_a_balanced_split_is_indistinguishable_from_the_majority():
    expected = ["Yes", "No"] * 24
    tuned_right = [e == "No" for e in expected]
    majority_right = [e == "Yes" for e in expected]
    low, high = paired_rate_interval(majority_right, tuned_right)
    assert low < 0 < high
    assert constant_answer(["No"] * 48) == "No"
    assert verdict((0.1, 0.4), (low, high), tuned_is_constant=True) == CONSTANT


@pytest.mark.parametrize(
    "difference, against_constant, word",
    [((0.05, 0.2), (0.01, 0.3), BETTER), ((-0.2, -0.05), None, WORSE), ((-0.1, 0.1), (0.2, 0.4), INDISTINGUISHABLE),
     ((0.0, 0.0), None, INDISTINGUISHABLE), ((0.1, 0.3), (-0.02, 0.2), CONSTANT), ((0.1, 0.3), (0.0, 0.2), CONSTANT)],
)
def test_verdict_rule(difference, against_constant, word):
    assert verdict(difference, against_constant) == word


def test_bootstrap_is_reproducible_and_ignores_unknown_fields():
    scores = [[1.0, None], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]] * 6
    assert mean_of_columns(scores) == pytest.approx((0.75 + 2 / 3) / 2)
    first, second = bootstrap_interval(scores), bootstrap_interval(scores)
    assert first == second and first[0] < mean_of_columns(scores) < first[1]
    assert paired_bootstrap_interval(scores, scores) == (0.0, 0.0)
