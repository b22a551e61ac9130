"""The statistics shown with every result: proportions with their 95% interval, and paired
comparisons of two experiments on the same observations.

Plain functions of counts and outcomes, no I/O. Wilson's interval is its closed form; the
paired tests come from statsmodels and scipy, imported where they are used (statsmodels
brings pandas: seconds that `introspect --help`, the services' start and every printed
result need not pay). ARCHITECTURE.md ("Statistics") says why these methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from .results import summary

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # the paired bootstrap is seeded: a table drawn twice has the same intervals
# Resamples drawn at once: each is as long as the observations paired, so this bounds the
# memory of a 25,000-observation comparison to a few tens of MB.
_BOOTSTRAP_BATCH = 200
_Z = NormalDist().inv_cdf(1 - (1 - CONFIDENCE) / 2)  # 1.959963984540054


@dataclass(frozen=True, slots=True)
class Proportion:
    """`successes` of `n`, with the Wilson score interval (None when n is 0: nothing to estimate)."""

    successes: int
    n: int
    low: float | None
    high: float | None

    @property
    def value(self) -> float | None:
        return self.successes / self.n if self.n else None

    def __str__(self) -> str:
        """`33.3% (2/6, 95% CI 9.7–70.0%)`; `n/a (0/0)` without observations."""
        if self.value is None or self.low is None or self.high is None:
            return f"n/a ({self.successes}/{self.n})"
        return f"{self.value:.1%} ({self.successes}/{self.n}, 95% CI {interval_text(self.low, self.high)})"


def interval_text(low: float, high: float) -> str:
    """`9.7–70.0%`: an interval of proportions or of differences of proportions, in percent."""
    return f"{low * 100:.1f}–{high * 100:.1f}%"


def proportion(successes: int, n: int) -> Proportion:
    """`successes` of `n` with its 95% Wilson score interval."""
    if not 0 <= successes <= n:
        raise ValueError(f"a proportion needs 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return Proportion(successes, n, None, None)
    # Wilson's score interval in closed form (Newcombe 1998, method 3), as statsmodels'
    # proportion_confint(method="wilson") computes it: the tests hold the two equal, and to
    # scipy's own. Written out because importing statsmodels costs `introspect run` and
    # `evaluate` almost two seconds just to print their results.
    p, z2 = successes / n, _Z**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At 0/n and n/n the score interval's bound is exactly 0 or 1; the formula gets there only
    # up to a rounding error (5.6e-17), which a CSV would show.
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return Proportion(successes, n, 0.0 if successes == 0 else low, 1.0 if successes == n else high)


def summary_with_intervals(results: dict[str, Any]) -> dict[str, Proportion]:
    """The paper's proportions of `summary` (accuracy, faithfulness or introspection), the
    same counts, each with its n and 95% interval."""
    return {name: proportion(p.numerator, p.denominator) for name, p in summary(results).items()}


# The counts of a result that are observations, shown as shares of them all (`total`).
COUNTED = ("faithful", "faithful_and_correct", "introspect", "introspect_and_correct", "correct", "missmatch", "error")


def count_shares(results: dict[str, Any]) -> dict[str, Proportion]:
    """Each count of the paper's `results` object as a share of every observation (`total`)."""
    return {name: proportion(results[name], results["total"]) for name in COUNTED if name in results}


@dataclass(frozen=True, slots=True)
class PairedTest:
    """Two experiments' binary outcomes (correct, or faithful) on the same `n` observations.

    `a_only` and `b_only` are the discordant pairs McNemar's test is about; `difference` is
    a's share of successes minus b's, with its paired-bootstrap 95% interval (None below
    two pairs, where there is nothing to resample)."""

    n: int
    a_successes: int
    b_successes: int
    a_only: int
    b_only: int
    difference: float | None
    low: float | None
    high: float | None
    p_value: float  # McNemar's exact test, two-sided; 1.0 without discordant pairs


def paired_test(
    a: Sequence[bool], b: Sequence[bool], seed: int = BOOTSTRAP_SEED, resamples: int = BOOTSTRAP_RESAMPLES
) -> PairedTest:
    """McNemar's exact test and the paired-bootstrap interval of the difference, for the
    outcomes `a[i]` and `b[i]` of the same observation i under two experiments."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes must be as many in both, got {len(a)} and {len(b)}")
    both = sum(1 for x, y in zip(a, b, strict=True) if x and y)
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = len(a)
    neither = n - both - a_only - b_only
    difference = (a_only - b_only) / n if n else None
    low, high = _paired_bootstrap(a, b, seed, resamples) if n >= 2 else (None, None)
    return PairedTest(n, both + a_only, both + b_only, a_only, b_only, difference, low, high,
                      _mcnemar_exact(both, a_only, b_only, neither))  # fmt: skip


def _mcnemar_exact(both: int, a_only: int, b_only: int, neither: int) -> float:
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar([[both, a_only], [b_only, neither]], exact=True).pvalue)


def _paired_bootstrap(a: Sequence[bool], b: Sequence[bool], seed: int, resamples: int) -> tuple[float, float]:
    """The percentile interval of mean(a) - mean(b), resampling observations (pairs kept
    together) with a generator seeded by `seed`."""
    import numpy as np
    from scipy.stats import bootstrap

    def difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    result = bootstrap(
        (np.asarray(a, dtype=np.int8), np.asarray(b, dtype=np.int8)),
        difference,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        batch=_BOOTSTRAP_BATCH,
        confidence_level=CONFIDENCE,
        # Percentile, not BCa: BCa's jackknife is undefined when every pair differs alike
        # (all discordant one way, or none), which small comparisons often are.
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for the comparisons of one table (family-wise
    error rate), in the order given."""
    if not p_values:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(p_values), alpha=1 - CONFIDENCE, method="holm")[1]]
