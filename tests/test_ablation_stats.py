"""The ablation's statistics against textbook values, hand computations and scipy's tests."""

from __future__ import annotations

import math
import statistics

import pytest
import scipy.stats as scipy_stats

from bagoftricks.ablation.stats import holm, mcnemar, mean_ci, paired


def test_mean_ci_textbook_values():
    # Student's t table, two-sided 95%: the half-width is t(n - 1) times the standard error.
    for df, value in [(1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (30, 2.042)]:
        values = [float(i % 3) for i in range(df + 1)]
        mean, std, half_width = mean_ci(values)
        assert std == pytest.approx(statistics.stdev(values))
        assert round(half_width / (std / math.sqrt(df + 1)), 3) == value


def test_paired_matches_scipy_ttest_rel():
    step = {0: 95.1, 1: 93.9, 2: 96.4, 3: 94.0}
    reference = {0: 94.0, 1: 93.5, 2: 94.8, 3: 93.1, 9: 50.0}  # seed 9 has no partner and is left out
    d = paired(step, reference, "base")
    differences = [step[s] - reference[s] for s in range(4)]
    expected = scipy_stats.ttest_rel([step[s] for s in range(4)], [reference[s] for s in range(4)])
    interval = expected.confidence_interval(0.95)
    assert d.n == 4 and d.reference == "base" and d.delta == pytest.approx(sum(differences) / 4)
    assert (d.low, d.high) == (pytest.approx(interval.low), pytest.approx(interval.high))
    assert d.p == pytest.approx(expected.pvalue)


def test_paired_edge_cases():
    assert paired({0: 1.0}, {1: 1.0}) is None  # no common seed
    one = paired({0: 2.0}, {0: 1.0})
    assert one.delta == 1.0 and math.isnan(one.low)
    # Differences that all agree: a t-interval of zero width would mark any shift; none is given, nothing is marked.
    same_shift = paired({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})
    assert same_shift.delta == 1.0 and math.isnan(same_shift.low) and math.isnan(same_shift.p)
    # Paired vs unpaired: a consistent +0.5 (±0.1) over seeds 5 points apart is established only by pairing.
    shifted = paired({0: 80.5, 1: 85.6, 2: 90.4}, {0: 80.0, 1: 85.0, 2: 90.0})
    assert shifted.low > 0


def test_holm_textbook_example():
    # Holm (1979)'s procedure by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04,
    # then the running maximum: 0.02, 0.03, 0.06, 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.2, math.nan, 0.9])
    assert adjusted[0] == pytest.approx(0.4) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.9)
    assert holm([0.6, 0.7]) == [1.0, 1.0]


@pytest.mark.parametrize(("only_a", "only_b"), [(3, 12), (12, 3), (0, 5), (7, 7), (300, 420)])
def test_mcnemar_exact_matches_binomial_test(only_a, only_b):
    exact, mid = mcnemar(only_a, only_b)
    assert exact == pytest.approx(scipy_stats.binomtest(only_a, only_a + only_b).pvalue, rel=1e-9)
    # mid-p = 2 * (P(X <= k) - P(X = k) / 2), k = min(b, c), from the binomial pmf by hand.
    k, n = min(only_a, only_b), only_a + only_b
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    assert mid == pytest.approx(min(1.0, 2 * tail - math.comb(n, k) / 2**n), rel=1e-9)


def test_mcnemar_hand_values():
    # 1 vs 5 discordant images: P(X <= 1 | n=6) = 7/64; exact = 14/64; mid-p = 2 * (7/64 - 3/64) = 8/64.
    assert mcnemar(1, 5) == (pytest.approx(14 / 64), pytest.approx(8 / 64))
    assert mcnemar(0, 0) == (1.0, 1.0)
