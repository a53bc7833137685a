"""The statistics of an ablation table: paired-by-seed t-intervals (same seed = same initialisation and data
order), Holm's adjustment (Holm 1979); on the per-image evidence (``predictions.pt``), McNemar's test, a paired
bootstrap over images and seeds and the classes that move most."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace

import torch
from scipy.stats import binom
from scipy.stats import t as student_t

from bagoftricks.ablation.record import by_step


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample std (ddof=1) and the 95% t-interval half-width; std and CI are NaN for one value."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan, math.nan
    std = statistics.stdev(values)
    return mean, std, float(student_t.ppf(0.975, n - 1)) * std / math.sqrt(n)


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
    return mean, mean - half_width, mean + half_width, min(1.0, 2 * float(student_t.sf(abs(t), len(values) - 1)))


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
    tail, at_k = float(binom.cdf(k, n, 0.5)), float(binom.pmf(k, n, 0.5))
    return min(1.0, 2 * tail), min(1.0, 2 * (tail - 0.5 * at_k))


def bootstrap_difference(a: torch.Tensor, b: torch.Tensor, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(a) - mean(b) (in points) for correctness ``[seeds, images]``,
    resampling images and seeds together (the same images and seeds for both: a paired bootstrap)."""
    generator = torch.Generator().manual_seed(seed)
    difference = a.float() - b.float()  # [S, N]
    seeds, images = difference.shape
    means = []
    for start in range(0, samples, 250):  # chunks bound the memory to 250 x S x N
        n = min(250, samples - start)
        seed_index = torch.randint(seeds, (n, seeds), generator=generator)
        image_index = torch.randint(images, (n, images), generator=generator)
        resampled = difference[seed_index.unsqueeze(-1), image_index.unsqueeze(1)]  # [n, S, N]
        means.append(resampled.mean(dim=(1, 2)))
    low, high = torch.quantile(torch.cat(means), torch.tensor([0.025, 0.975])).tolist()
    return 100 * low, 100 * high


def per_class_delta(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, top: int = 3) -> list[tuple[int, float]]:
    """The ``top`` classes whose accuracy (mean over seeds, points) changes most from ``b`` to ``a``."""
    deltas = []
    for cls in labels.unique().tolist():
        mask = labels == cls
        deltas.append((cls, 100 * (a[:, mask].float().mean() - b[:, mask].float().mean()).item()))
    return sorted(deltas, key=lambda item: -abs(item[1]))[:top]


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


def mean_of(records: list, key: str) -> float:
    """The mean of a record field over the records that have it; NaN when none does."""
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
                                     mean_of(kept, "val_top5"), mean_of(kept, "test_top1"), mean_of(kept, "time_per_epoch_s"),
                                     mean_of(group, "params"), mean_of(group, "macs"), [r.seed for r in group if r.diverged]))  # fmt: skip
    # Holm's adjustment across the table's distinct comparisons (Δ prev and Δ base are one when the parent is the base).
    tests = {(s.name, d.reference): d for s in summaries for d in (s.delta_prev, s.delta_base) if d is not None}
    adjusted = dict(zip(tests, holm([d.p for d in tests.values()])))
    for s in summaries:
        for name in ("delta_prev", "delta_base"):
            if (d := getattr(s, name)) is not None:
                setattr(s, name, replace(d, p_holm=adjusted[(s.name, d.reference)]))
    return summaries
