"""The ablation's figures, from run records and step summaries: Matplotlib's Agg canvas, no pyplot state."""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bagoftricks.ablation.record import read_metrics
from bagoftricks.ablation.stats import StepSummary


def _figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Any]:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _by_step(records: list) -> dict[str, list]:
    steps: dict[str, list] = {}
    for record in sorted(records, key=lambda r: (r.step_index, r.seed)):
        if not record.diverged:
            steps.setdefault(record.step, []).append(record)
    return steps


def figure_top1(summaries: list[StepSummary]) -> Figure:
    """Top-1 per step, error bars = sample std over seeds, each seed as a dot."""
    figure, ax = _figure(max(5.0, 0.8 * len(summaries) + 2))
    x = list(range(len(summaries)))
    std = [0.0 if math.isnan(s.top1_std) else s.top1_std for s in summaries]
    ax.errorbar(x, [s.top1_mean for s in summaries], yerr=std, fmt="o", capsize=4, label="mean ± std")
    for i, s in zip(x, summaries):
        ax.plot([i] * len(s.top1), s.top1, ".", color="gray", alpha=0.6)
    ax.set_xticks(x, [s.name for s in summaries], rotation=30, ha="right")
    ax.set_ylabel("val top-1 (%), last epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def figure_val_curves(records: list) -> Figure:
    """val/top1 per epoch, mean over seeds, one line per step (the records' curves)."""
    figure, ax = _figure()
    for name, runs in _by_step(records).items():
        length = min(len(r.val_top1_curve) for r in runs)
        mean = [statistics.fmean(r.val_top1_curve[e] for r in runs) for e in range(length)]
        ax.plot(range(1, length + 1), mean, marker="o", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("val top-1 (%), mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def figure_lr(out_dir: str | os.PathLike, records: list, max_points: int = 2000) -> Figure:
    """train/lr per optimizer step of each step's run with the lowest seed (from its logged metrics)."""
    figure, ax = _figure()
    for name, runs in _by_step(records).items():
        points = [(r["step"], r["train/lr"]) for r in read_metrics(Path(out_dir) / runs[0].run_dir) if "train/lr" in r]
        points = points[:: max(1, len(points) // max_points)]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=f"{name} (seed {runs[0].seed})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate (head group)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def figure_budget(by_budget: dict[str, dict[float, StepSummary]]) -> Figure:
    """Each step's Δ prev (points, 95% paired interval) against the budget, on a log-2 axis."""
    figure, ax = _figure()
    for name, per_step in by_budget.items():
        points = sorted((b, s.delta_prev) for b, s in per_step.items() if s.delta_prev is not None)
        if not points:
            continue
        low = [0.0 if math.isnan(d.low) else d.delta - d.low for _, d in points]
        high = [0.0 if math.isnan(d.high) else d.high - d.delta for _, d in points]
        ax.errorbar([b for b, _ in points], [d.delta for _, d in points], yerr=[low, high], marker="o", capsize=3, label=name)
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("budget (epoch multiplier)")
    ax.set_ylabel("Δ prev top-1 (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure
