"""How sure an evaluation may be: 95 % intervals, the tuned-minus-base difference, the verdict, and its words.

A held-out split of 48 images is small: 0.5 → 0.6 there is noise. So every headline number carries an
interval, and the report's verdict compares tuned with base through the interval of their paired difference
(both models answered the same samples, so their outcomes are paired; pairing removes the samples' own
difficulty from the noise). A constant answer is the floor: a model that does not beat "always the most
frequent answer" is no better than one, whatever it gained on a base model that writes garbage.

Rates (accuracy, JSON rate, ...) use Wilson's score interval, which stays inside [0, 1] and keeps its width at
0 % and 100 %. Means of per-sample scores (field accuracy, similarity) use a percentile bootstrap with a fixed
seed, so a report is reproducible. The paired difference of two rates is Newcombe's score interval for paired
proportions (his method 10, built on the McNemar table); of two means, a paired bootstrap on shared resamples.

Pure functions of plain numbers: the recipes' evaluations build their reports with them, the page reads them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
RESAMPLES = 2000
SEED = 0

BETTER = "better"
WORSE = "worse"
INDISTINGUISHABLE = "indistinguishable"
CONSTANT = "no better than a constant answer"
VERDICTS = (BETTER, WORSE, INDISTINGUISHABLE, CONSTANT)

Interval = tuple[float, float]
# A sample's scores: one number, or one per column (a schema field), None where the label is unknown.
Scores = Sequence[float | None] | Sequence[Sequence[float | None]]


def wilson_interval(successes: int, n: int, z: float = Z95) -> Interval:
    """Wilson's score interval for a rate of `successes` in `n`; (0, 1) when nothing was counted.

    >>> [round(x, 3) for x in wilson_interval(24, 48)]
    [0.364, 0.636]
    >>> [round(x, 3) for x in wilson_interval(48, 48)]
    [0.926, 1.0]
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_rate_interval(base: Sequence[bool], tuned: Sequence[bool], z: float = Z95) -> Interval:
    """95 % interval of rate(tuned) − rate(base) on the same samples: Newcombe's score interval for paired
    proportions (method 10), from the McNemar table of who got which sample right.

    >>> # Fagerland, Lydersen & Laake's example (Cavo et al. 2012): 59 both, 6 tuned only, 16 base only, 80 neither;
    >>> # their book gives -0.0621 (95 % CI -0.1186 to -0.0046).
    >>> tuned = [True] * 59 + [True] * 6 + [False] * 16 + [False] * 80
    >>> base = [True] * 59 + [False] * 6 + [True] * 16 + [False] * 80
    >>> [round(x, 4) for x in paired_rate_interval(base, tuned)]
    [-0.1186, -0.0046]
    >>> lo, hi = paired_rate_interval([True, False] * 24, [True, False] * 24)  # the same answers: 0 is inside
    >>> lo < 0 < hi
    True
    """
    if len(base) != len(tuned):
        raise ValueError(f"paired outcomes differ in length: {len(base)} base, {len(tuned)} tuned")
    n = len(base)
    if n == 0:
        return -1.0, 1.0
    both = sum(b and t for b, t in zip(base, tuned))
    tuned_only = sum(t and not b for b, t in zip(base, tuned))
    base_only = sum(b and not t for b, t in zip(base, tuned))
    neither = n - both - tuned_only - base_only
    p1, p2 = (both + tuned_only) / n, (both + base_only) / n
    l1, u1 = wilson_interval(both + tuned_only, n, z)
    l2, u2 = wilson_interval(both + base_only, n, z)
    margins = (both + tuned_only) * (base_only + neither) * (both + base_only) * (tuned_only + neither)
    # The correlation of the two rates, continuity-corrected towards 0 as Newcombe's method 10 does.
    association = both * neither - tuned_only * base_only
    if association > n / 2:
        association -= n / 2
    elif association >= 0:
        association = 0
    phi = association / math.sqrt(margins) if margins else 0.0
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    difference = p1 - p2
    return max(-1.0, difference - below), min(1.0, difference + above)


def mean_of_columns(scores: Scores) -> float | None:
    """The statistic the bootstraps resample: each column's mean over its known samples, then the mean of those
    (one column: the plain mean). None when nothing is known.

    >>> mean_of_columns([1.0, 0.0, 1.0, 1.0])
    0.75
    >>> mean_of_columns([[1.0, None], [0.0, 1.0]])  # field a: 0.5, field b: 1.0
    0.75
    """
    values = _matrix(scores)
    stats = _column_mean_stat(values, np.ones((1, len(values))))
    return None if not len(stats) or math.isnan(stats[0]) else float(stats[0])


def bootstrap_interval(scores: Scores, resamples: int = RESAMPLES, seed: int = SEED, level: float = 0.95) -> Interval:
    """Percentile-bootstrap interval of `mean_of_columns(scores)`, resampling samples (rows) with a fixed seed.

    >>> [round(x, 2) for x in bootstrap_interval([1.0, 0.0] * 24)]
    [0.35, 0.65]
    >>> bootstrap_interval([0.5] * 10)
    (0.5, 0.5)
    """
    values = _matrix(scores)
    stats = _column_mean_stat(values, _resample_weights(len(values), resamples, seed))
    return _percentiles(stats, level)


def paired_bootstrap_interval(base: Scores, tuned: Scores, resamples: int = RESAMPLES, seed: int = SEED,
                              level: float = 0.95) -> Interval:
    """Interval of `mean_of_columns(tuned) − mean_of_columns(base)`, both computed on the same resampled samples.

    >>> paired_bootstrap_interval([0.5, 0.25] * 8, [0.5, 0.25] * 8)  # the same scores: no difference at all
    (0.0, 0.0)
    >>> [round(x, 2) for x in paired_bootstrap_interval([0.0] * 16, [1.0, 0.5] * 8)]  # tuned 0.75 above base
    [0.62, 0.88]
    """
    base_values, tuned_values = _matrix(base), _matrix(tuned)
    if len(base_values) != len(tuned_values):
        raise ValueError(f"paired scores differ in length: {len(base_values)} base, {len(tuned_values)} tuned")
    weights = _resample_weights(len(base_values), resamples, seed)
    return _percentiles(_column_mean_stat(tuned_values, weights) - _column_mean_stat(base_values, weights), level)


def ratio_bootstrap_interval(numerators: Sequence[float], denominators: Sequence[float], resamples: int = RESAMPLES,
                             seed: int = SEED, level: float = 0.95) -> Interval:
    """Percentile-bootstrap interval of sum(numerators) / sum(denominators) over resampled samples: F1 is
    2·TP / (2·TP + FP + FN), each sample adding its own share.

    >>> [round(x, 2) for x in ratio_bootstrap_interval([2, 0, 0, 2] * 6, [2, 1, 0, 2] * 6)]  # F1 0.8
    [0.6, 0.93]
    """
    numerators_ = np.asarray(numerators, dtype=float)
    denominators_ = np.asarray(denominators, dtype=float)
    weights = _resample_weights(len(numerators_), resamples, seed)
    top, bottom = weights @ numerators_, weights @ denominators_
    with np.errstate(invalid="ignore", divide="ignore"):
        return _percentiles(np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan), level)


def verdict(difference: Interval, against_constant: Interval | None = None, tuned_is_constant: bool = False) -> str:
    """The headline's word for tuned against base.

    `no better than a constant answer` comes first: tuned gives one answer to every sample, or the interval of
    tuned minus the constant answer's score reaches 0. Then `indistinguishable` when the interval of tuned minus
    base holds 0, else `better` or `worse`.

    >>> verdict((0.1, 0.3)), verdict((-0.3, -0.1)), verdict((-0.1, 0.1)), verdict((0.0, 0.0))
    ('better', 'worse', 'indistinguishable', 'indistinguishable')
    >>> verdict((0.2, 0.4), against_constant=(-0.05, 0.1))
    'no better than a constant answer'
    >>> verdict((0.2, 0.4), tuned_is_constant=True)
    'no better than a constant answer'
    >>> verdict((math.nan, math.nan))  # nothing was scored: nothing to claim
    'indistinguishable'
    """
    if tuned_is_constant or (against_constant is not None and against_constant[0] <= 0):
        return CONSTANT
    low, high = difference
    if math.isnan(low) or math.isnan(high) or low <= 0 <= high:
        return INDISTINGUISHABLE
    return BETTER if low > 0 else WORSE


def constant_answer(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The one answer a model gave to every sample (two or more), else None; no answer (None) is never one.

    >>> constant_answer(["No"] * 48), constant_answer(["No", "Yes"])
    ('No', None)
    >>> constant_answer([None, None]), constant_answer(["No"])
    (None, None)
    """
    counts = Counter(answers)
    if len(answers) < 2 or len(counts) != 1:
        return None
    (answer,) = counts
    return answer


def most_frequent(values: Sequence[Hashable], order: Sequence[Hashable] = ()) -> Hashable | None:
    """The most frequent value; a tie goes to the one first in `order`, then to the one seen first.

    >>> most_frequent(["No", "Yes", "Yes"]), most_frequent(["No", "Yes"], order=["Yes", "No"]), most_frequent([])
    ('Yes', 'Yes', None)
    """
    counts = Counter(values)
    if not counts:
        return None
    rank = {value: i for i, value in enumerate(order)}
    first_seen = {value: i for i, value in reversed(list(enumerate(values)))}
    return min(counts, key=lambda v: (-counts[v], rank.get(v, len(rank)), first_seen[v]))


# ---------------------------------------------------------------------------------------------- words


def same_answer_warning(model: str, answer: Any, n: int, unit: str) -> str:
    """The warning for a model that gave one answer to every sample.

    >>> same_answer_warning("tuned", "No", 48, "images")
    'tuned answers "No" to all 48 images'
    >>> same_answer_warning("base", {"scene": "Urban"}, 4, "clips")
    'base answers {"scene": "Urban"} to all 4 clips'
    """
    return f"{model} answers {json.dumps(answer, ensure_ascii=False)} to all {n} {unit}"


def truncation_note(max_new_tokens: int) -> str:
    """What to say about an answer cut off at the token limit: the setting, and a value to raise it to.

    >>> truncation_note(96)
    'cut off at eval.max_new_tokens=96 (generation hit the limit): raise it, e.g. eval.max_new_tokens=192'
    """
    return (f"cut off at eval.max_new_tokens={max_new_tokens} (generation hit the limit): "
            f"raise it, e.g. eval.max_new_tokens={2 * max_new_tokens}")


def truncation_warning(model: str, truncated: int, n: int, max_new_tokens: int) -> str:
    """
    >>> truncation_warning("tuned", 3, 16, 96)
    'tuned: 3 of 16 answers were cut off at eval.max_new_tokens=96 (generation hit the limit): raise it, e.g. eval.max_new_tokens=192'
    """
    return f"{model}: {truncated} of {n} answers were {truncation_note(max_new_tokens)}"


def verdict_sentence(headline: dict[str, Any], baseline: str = "base") -> str:
    """The headline in words: both figures, the verdict, the difference and its interval.

    `headline` is a report's `headline`: `base`, `tuned`, `difference`, `ci95` (of the difference), `verdict`,
    and for a constant-answer verdict `constant` (the constant answer's label and score).

    >>> verdict_sentence({"base": 0.5, "tuned": 0.875, "difference": 0.375, "ci95": [0.2, 0.52], "verdict": "better"})
    'base 0.500 → tuned 0.875: tuned is better than base (+0.375), 95 % interval of the difference [+0.200, +0.520]'
    >>> verdict_sentence({"base": 0.5, "tuned": 0.5, "difference": 0.0, "ci95": [-0.1, 0.1], "verdict": "indistinguishable"})
    'base 0.500 → tuned 0.500: indistinguishable from base (+0.000, 95 % interval [-0.100, +0.100] holds 0)'
    >>> verdict_sentence({"base": 0.1, "tuned": 0.5, "difference": 0.4, "ci95": [0.3, 0.5],
    ...                   "verdict": "no better than a constant answer", "constant": {"label": 'always "Yes"', "score": 0.5}})
    'base 0.100 → tuned 0.500: no better than a constant answer (always "Yes" scores 0.500)'
    """
    base, tuned, difference = headline["base"], headline["tuned"], headline["difference"]
    low, high = headline["ci95"]
    figures = f"{baseline} {base:.3f} → tuned {tuned:.3f}"
    word = headline["verdict"]
    if word == CONSTANT:
        constant = headline.get("constant") or {}
        if "score" in constant:
            return f"{figures}: {CONSTANT} ({constant.get('label', 'a constant answer')} scores {constant['score']:.3f})"
        return f"{figures}: {CONSTANT}"
    if word == INDISTINGUISHABLE:
        return (f"{figures}: indistinguishable from {baseline} "
                f"({difference:+.3f}, 95 % interval [{low:+.3f}, {high:+.3f}] holds 0)")
    return (f"{figures}: tuned is {word} than {baseline} ({difference:+.3f}), "
            f"95 % interval of the difference [{low:+.3f}, {high:+.3f}]")


def rounded(interval: Interval, digits: int = 3) -> list[float] | None:
    """An interval as the report stores it; None when there was nothing to resample (JSON has no NaN).

    >>> rounded((0.36392, 0.63608)), rounded((math.nan, math.nan))
    ([0.364, 0.636], None)
    """
    if any(math.isnan(x) for x in interval):
        return None
    return [round(float(interval[0]), digits), round(float(interval[1]), digits)]


# ---------------------------------------------------------------------------------------------- bootstrap


def _matrix(scores: Scores) -> np.ndarray:
    rows = [[np.nan if v is None else float(v) for v in (row if isinstance(row, (list, tuple)) else [row])]
            for row in scores]
    return np.asarray(rows, dtype=float).reshape(len(rows), -1)


def _resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each sample is drawn in each resample: (resamples, n), each row summing to n."""
    if n == 0:
        return np.zeros((resamples, 0))
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples).astype(float)


def _column_mean_stat(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    known = ~np.isnan(values)
    sums = weights @ np.where(known, values, 0.0)
    counts = weights @ known.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)
        present = ~np.isnan(means)
        totals = np.where(present, means, 0.0).sum(axis=1)
        columns = present.sum(axis=1)
        return np.where(columns > 0, totals / np.where(columns > 0, columns, 1), np.nan)


def _percentiles(stats: np.ndarray, level: float) -> Interval:
    stats = stats[~np.isnan(stats)]
    if not len(stats):
        return math.nan, math.nan
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def format_interval(interval: Any, signed: bool = False) -> str:
    """An interval as a report's tables print it, "" for anything that is not one; `signed` for a difference's.

    >>> format_interval([0.3639, 0.6361]), format_interval(None), format_interval({"scene": [0, 1]})
    ('[0.364, 0.636]', '', '')
    >>> format_interval([-0.074, 0.074], signed=True)
    '[-0.074, +0.074]'
    """
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(isinstance(x, (int, float)) for x in interval):
        return f"[{interval[0]:+.3f}, {interval[1]:+.3f}]" if signed else f"[{interval[0]:.3f}, {interval[1]:.3f}]"
    return ""
