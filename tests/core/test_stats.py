"""The statistics against values computed independently: another library's implementation,
and textbook values worked out by hand."""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from services.core.results import summary
from services.core.stats import (
    Proportion,
    count_shares,
    holm,
    paired_test,
    proportion,
    summary_with_intervals,
)


@pytest.mark.parametrize(
    ("successes", "n"), [(0, 1), (1, 1), (0, 10), (2, 6), (6, 18), (7, 20), (50, 100), (997, 1000)]
)
def test_wilson_interval_equals_scipys_own_wilson_interval(successes: int, n: int) -> None:
    # ours is the closed form; scipy's binomtest and statsmodels each have an implementation of their own.
    scipy_interval = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    ours = proportion(successes, n)
    assert ours.low == pytest.approx(max(0.0, scipy_interval.low), abs=1e-12)
    assert ours.high == pytest.approx(min(1.0, scipy_interval.high), abs=1e-12)
    low, high = proportion_confint(successes, n, alpha=0.05, method="wilson")
    assert (ours.low, ours.high) == (pytest.approx(max(0.0, low), abs=1e-12), pytest.approx(min(1.0, high), abs=1e-12))


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        # 0 of n by hand: the upper bound is z^2 / (n + z^2) = 3.8415 / 13.8415
        (0, 10, 0.0, 0.2775),
    ],
)
def test_wilson_interval_matches_textbook_values(successes: int, n: int, low: float, high: float) -> None:
    ours = proportion(successes, n)
    assert (round(ours.low or 0.0, 4), round(ours.high or 0.0, 4)) == (low, high)


def test_a_proportion_keeps_its_counts_and_says_so() -> None:
    two_of_six = proportion(2, 6)
    assert (two_of_six.successes, two_of_six.n, two_of_six.value) == (2, 6, 2 / 6)
    assert str(two_of_six) == "33.3% (2/6, 95% CI 9.7–70.0%)"
    assert proportion(0, 0) == Proportion(0, 0, None, None)
    assert str(proportion(0, 0)) == "n/a (0/0)"
    all_of_them = proportion(6, 6)
    assert all_of_them.high == 1.0 and all_of_them.low is not None and 0.6 < all_of_them.low < 0.62
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        proportion(7, 6)


def test_summary_with_intervals_keeps_the_papers_numbers() -> None:
    results = {"faithful": 7, "faithful_and_correct": 2, "correct": 6, "missmatch": 2, "error": 0, "total": 20}
    with_intervals = summary_with_intervals(results)
    assert list(with_intervals) == list(summary(results)) == ["accuracy", "faithfulness"]
    for name, counted in summary(results).items():
        assert with_intervals[name].value == counted.value
        assert (with_intervals[name].successes, with_intervals[name].n) == (counted.numerator, counted.denominator)
    assert (with_intervals["accuracy"].successes, with_intervals["accuracy"].n) == (6, 18)
    assert (with_intervals["faithfulness"].successes, with_intervals["faithfulness"].n) == (2, 6)
    introspection = summary_with_intervals(
        {"introspect": 3, "introspect_and_correct": 1, "correct": 4, "missmatch": 0, "error": 1, "total": 9}
    )
    assert introspection["introspection"] == proportion(1, 4)


def test_every_count_is_a_share_of_all_observations() -> None:
    results = {"answer": [], "faithful": 7, "faithful_and_correct": 2, "correct": 6, "missmatch": 2, "error": 0,
               "total": 20}  # fmt: skip
    shares = count_shares(results)
    assert list(shares) == ["faithful", "faithful_and_correct", "correct", "missmatch", "error"]
    assert shares["missmatch"] == proportion(2, 20)
    assert shares["error"].successes == 0 and shares["error"].low == 0.0


def test_mcnemar_exact_equals_the_binomial_test_of_the_discordant_pairs() -> None:
    # McNemar's exact test is the two-sided binomial test of a_only against a_only + b_only
    # at one half: scipy computes it on its own.
    outcomes = random.Random(7)
    for _ in range(20):
        a = [outcomes.random() < 0.6 for _ in range(40)]
        b = [outcomes.random() < 0.45 for _ in range(40)]
        tested = paired_test(a, b, resamples=200)
        discordant = tested.a_only + tested.b_only
        if discordant:
            assert tested.p_value == pytest.approx(binomtest(tested.a_only, discordant, 0.5).pvalue, rel=1e-9)


def test_mcnemar_textbook_values() -> None:
    # 9 pairs right only under a, 1 only under b: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024
    tested = paired_test([True] * 9 + [False] + [True] * 5, [False] * 9 + [True] + [True] * 5, resamples=200)
    assert (tested.n, tested.a_only, tested.b_only, tested.a_successes, tested.b_successes) == (15, 9, 1, 14, 6)
    assert tested.p_value == pytest.approx(22 / 1024, rel=1e-12)
    assert tested.p_value == pytest.approx(mcnemar([[5, 9], [1, 0]], exact=True).pvalue, rel=1e-12)
    # No discordant pair: nothing speaks against equality.
    assert paired_test([True, False], [True, False], resamples=200).p_value == 1.0
    # 0 against 5 discordant: 2 / 2^5
    assert paired_test([False] * 5, [True] * 5, resamples=200).p_value == pytest.approx(2 / 32)


def test_paired_bootstrap_interval_holds_the_difference_and_is_reproducible() -> None:
    outcomes = random.Random(3)
    a = [outcomes.random() < 0.7 for _ in range(300)]
    b = [x if outcomes.random() < 0.8 else not x for x in a]  # b agrees with a mostly: a paired design
    first, again = paired_test(a, b), paired_test(a, b)
    assert first == again  # seeded: the same interval every time
    assert first.difference == pytest.approx(sum(a) / 300 - sum(b) / 300)
    assert first.low is not None and first.high is not None
    assert first.low < first.difference < first.high
    # The paired interval is about as wide as the normal approximation of the paired
    # difference: 2 * 1.96 * sd(a_i - b_i) / sqrt(n).
    differences = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    mean = sum(differences) / len(differences)
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (len(differences) - 1))
    assert first.high - first.low == pytest.approx(2 * 1.96 * sd / math.sqrt(300), rel=0.1)
    assert paired_test(a, b, seed=1) != first  # another seed, other resamples


def test_paired_test_edges() -> None:
    same = paired_test([True, True, False], [True, True, False], resamples=200)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)
    one = paired_test([True], [False], resamples=200)
    assert (one.n, one.difference, one.low, one.high) == (1, 1.0, None, None)
    none = paired_test([], [], resamples=200)
    assert (none.n, none.difference, none.low, none.high, none.p_value) == (0, None, None, None, 1.0)
    with pytest.raises(ValueError, match="as many in both"):
        paired_test([True], [True, False])


def test_holm_against_a_hand_computed_step_down() -> None:
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04; made monotone: 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == [0.02]
    assert holm([]) == []
