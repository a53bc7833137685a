"""The statistics of an ablation table in plain Python (scipy is not a dependency; the tests compare with it):
paired-by-seed t-intervals (same seed = same initialisation and data order) and Holm's adjustment (Holm 1979)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace

from bagoftricks.ablation.record import by_step


def _betainc_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz's method)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)), -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (Numerical Recipes, section 6.4)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betainc_fraction(a, b, x) / a
    return 1 - math.exp(log_front) * _betainc_fraction(b, a, 1 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (not necessarily integer) degrees of freedom."""
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1 - tail


def t_quantile(df: float, level: float = 0.975) -> float:
    """The ``level`` quantile of Student's t (0.975: the two-sided 95% interval's), by bisection on ``t_sf``."""
    low, high = 0.0, 1.0
    while t_sf(high, df) > 1 - level:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if t_sf(middle, df) > 1 - level else (low, middle)
        if high - low < 1e-12:
            break
    return (low + high) / 2


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample std (ddof=1) and the 95% t-interval half-width; std and CI are NaN for one value."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan, math.nan
    std = statistics.stdev(values)
    return mean, std, t_quantile(n - 1) * std / math.sqrt(n)


@dataclass(frozen=True)
class Paired:
    """A step minus its reference over the seeds both have: mean difference, 95% paired-t interval, p-value."""

    reference: str
    n: int
    delta: float
    low: float  # NaN with fewer than 2 pairs, or pairs whose differences all agree (no spread)
    high: float
    p: float  # two-sided p of the paired t-test (NaN with fewer than 2 pairs)
    p_holm: float = math.nan  # p after Holm's adjustment across the table

    @property
    def trusted(self) -> bool:  # the 95% interval excludes 0
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)


def interval_text(delta: float, n: int, low: float, high: float, p_holm: float) -> str:
    """``+1.61 [-0.20, +3.42] ~``: a delta, its 95% interval and a mark (``*`` significant after Holm's
    adjustment, ``~`` the interval includes 0); without an interval the delta alone, ``(no spread)`` for 2+ values."""
    if math.isnan(low):
        return f"{delta:+.2f}" + (" (no spread)" if n >= 2 else "")
    mark = " *" if p_holm < 0.05 else "" if low > 0 or high < 0 else " ~"
    return f"{delta:+.2f} [{low:+.2f}, {high:+.2f}]{mark}"


def one_sample(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, 95% t-interval (low, high) and two-sided p of "the mean is 0"; NaN interval and p for fewer than
    two values, and for values that all agree: a t-interval from zero variance has zero width whatever the
    number of seeds, and would mark any shift significant; it says too little to test."""
    mean, std, half_width = mean_ci(values)
    if len(values) < 2 or std == 0:
        return mean, math.nan, math.nan, math.nan
    t = mean / (std / math.sqrt(len(values)))
    return mean, mean - half_width, mean + half_width, min(1.0, 2 * t_sf(abs(t), len(values) - 1))


def paired(step: dict[int, float], reference: dict[int, float], name: str = "") -> Paired | None:
    """``step`` minus ``reference`` (values by seed), paired by seed; None when they share no seed."""
    seeds = sorted(set(step) & set(reference))
    if not seeds:
        return None
    return Paired(name, len(seeds), *one_sample([step[s] - reference[s] for s in seeds]))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count)."""
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def mcnemar(only_a: int, only_b: int) -> tuple[float, float]:
    """McNemar's exact two-sided p and mid-p (Fagerland et al. 2013) on the discordant images: ``only_a`` right
    only in run A, ``only_b`` only in B."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0, 1.0
    # P(X = i) for X ~ Binomial(n, 1/2), i = 0..k, from logs: n (the discordant images) runs into the thousands.
    log_pmf = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    pmf = [math.exp(value) for value in log_pmf]
    tail = sum(pmf)
    return min(1.0, 2 * tail), min(1.0, 2 * (tail - 0.5 * pmf[k]))


@dataclass
class StepSummary:
    index: int
    name: str
    n: int
    top1: list[float]
    top1_mean: float
    top1_std: float
    top1_ci: float
    delta_prev: Paired | None  # vs the step this one builds on, paired by seed
    delta_base: Paired | None  # vs the first step
    top5_mean: float
    test_top1_mean: float
    time_per_epoch_s: float
    params: float
    macs: float
    diverged: list[int] = field(default_factory=list)  # seeds whose runs diverged: kept out of every number


def _mean(records: list, key: str) -> float:
    values = [getattr(r, key) for r in records if getattr(r, key) is not None]
    return statistics.fmean(values) if values else math.nan


def summarize(records: list) -> list[StepSummary]:
    """One summary per step (in spec order) from the runs' records; diverged runs are counted, not averaged."""
    steps = by_step(records)
    usable = {name: [r for r in group if not r.diverged] for name, group in steps.items()}
    by_seed = {name: {r.seed: r.val_top1 for r in group if r.val_top1 is not None} for name, group in usable.items()}
    base = next(iter(steps), "")

    def delta(name: str, other: str) -> Paired | None:
        return paired(by_seed[name], by_seed[other], other) if other and other != name and other in by_seed else None

    summaries = []
    for name, group in steps.items():
        top1, kept = list(by_seed[name].values()), usable[name]
        summaries.append(StepSummary(group[0].step_index, name, len(top1), top1, *mean_ci(top1),
                                     delta(name, group[0].parent), delta(name, base),
                                     _mean(kept, "val_top5"), _mean(kept, "test_top1"), _mean(kept, "time_per_epoch_s"),
                                     _mean(group, "params"), _mean(group, "macs"), [r.seed for r in group if r.diverged]))  # fmt: skip
    # Holm's adjustment across the table's distinct comparisons (Δ prev and Δ base are one when the parent is the base).
    tests = {(s.name, d.reference): d for s in summaries for d in (s.delta_prev, s.delta_base) if d is not None}
    adjusted = dict(zip(tests, holm([d.p for d in tests.values()])))
    for s in summaries:
        for name in ("delta_prev", "delta_base"):
            if (d := getattr(s, name)) is not None:
                setattr(s, name, replace(d, p_holm=adjusted[(s.name, d.reference)]))
    return summaries
