"""The report of an output folder: records -> ``stats`` -> results.md, the terminal table, the PNGs (Agg canvas,
no pyplot state) and the W&B summary run; ``notebooks/ablation_report.ipynb`` calls the same functions."""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.console import Console
from rich.table import Table

from bagoftricks.ablation.design import Design, effects_section
from bagoftricks.ablation.record import RunRecord, by_step, read_metrics
from bagoftricks.ablation.spec import read_yaml
from bagoftricks.ablation.stats import Paired, StepSummary, bootstrap_difference, interval_text, mcnemar, mean_of, paired, per_class_delta, summarize
from bagoftricks.ablation.store import Store, atomic_write
from bagoftricks.errors import UserError

FOOTER = (
    "top-1: the last epoch's val/top1 (the best epoch's is biased upwards), mean ± std (ddof=1) over seeds; 95% CI: "
    "half-width of its t-interval. Δ prev: vs the step this one builds on (leave-one-out: vs all tricks; none in "
    "factorial designs); Δ base: vs the first step; in points, paired by seed (same seed = same initialisation and data "
    "order): the mean per-seed difference with its 95% paired-t interval. `~`: the interval includes 0; `*`: significant "
    "at 5% after Holm's adjustment across the table's distinct comparisons; no mark: the interval excludes 0, Holm does "
    "not confirm it. One seed shows the delta alone, equal differences `(no spread)`: neither is marked or counted by "
    "Holm. `†`: some of the step's runs diverged (a loss that is not finite); they are left out and listed below."
)


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "" if value is None or math.isnan(value) else format(value, fmt)


def _delta_cell(d: Paired | None) -> str:
    return "" if d is None else interval_text(d.delta, d.n, d.low, d.high, d.p_holm)


def table_rows(summaries: list[StepSummary]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-step table (shared by results.md, the printed table, W&B and the notebook)."""
    has_test = any(not math.isnan(s.test_top1_mean) for s in summaries)
    header = ["#", "step", "n", "top-1 (%)", "95% CI", "Δ prev [95% CI]", "Δ base [95% CI]", "top-5 (%)"]
    header += ["test top-1 (%)"] * has_test + ["s/epoch", "params (M)", "GMACs"]
    rows = []
    for s in summaries:
        top1 = _num(s.top1_mean) + (f" ± {_num(s.top1_std)}" if not math.isnan(s.top1_std) else "")
        ci = f"±{_num(s.top1_ci)}" if not math.isnan(s.top1_ci) else ""
        cells = [str(s.index), s.name + (" †" if s.diverged else ""), str(s.n), top1, ci]
        cells += [_delta_cell(s.delta_prev), _delta_cell(s.delta_base)]
        cells += [_num(s.top5_mean)] + [_num(s.test_top1_mean)] * has_test
        cells += [_num(s.time_per_epoch_s, ".1f"), _num(s.params / 1e6), _num(s.macs / 1e9, ".3f")]
        rows.append(cells)
    return header, rows


def markdown_table(summaries: list[StepSummary], title: str | None = None) -> str:
    header, rows = table_rows(summaries)
    lines = [f"## {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join([*lines, "", FOOTER, ""])


def print_table(summaries: list[StepSummary], title: str | None = None, console: Console | None = None) -> None:
    header, rows = table_rows(summaries)
    table = Table(title=title, caption=FOOTER, caption_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 1 else "right")
    for row in rows:
        table.add_row(*row)
    console = console or Console()
    if not console.is_terminal:  # a log file or a pipe: wide enough not to wrap the cells
        console = Console(file=console.file, width=max(console.width, 180))
    console.print(table)


def more_sections(out_dir: Path, records: list, summaries: list[StepSummary], design: Design | None = None) -> str:
    """The sections of results.md after the per-step table."""
    text = ""
    if diverged := [f"- {r.step}, seed {r.seed}: {r.note or 'diverged'} ({r.run_dir})" for r in records if r.diverged]:
        text = "\n".join(["", "**Diverged runs** (left out of every number above):", *diverged, ""])
    kept = [r for r in records if not r.diverged]
    if len(threads := sorted({r.cpu_threads for r in kept if r.cpu_threads})) > 1:
        text += (f"\n**Mixed CPU thread counts** ({', '.join(map(str, threads))}): the thread count changes the order of "
                 "floating-point sums, and so the numbers; rerun with one `--jobs` value for clean paired deltas.\n")
    text += readouts_section(kept)
    if design:
        text += effects_section(design, kept)
    if by_budget := budget_table(kept, summaries):
        text += budget_section(by_budget)
    comparisons = list(dict.fromkeys((s.name, d.reference) for s in summaries for d in (s.delta_prev, s.delta_base) if d))
    return text + per_image_section(out_dir, kept, comparisons)


READOUTS = (("val_ema_top1", "EMA"), ("val_top1_tta", "flip TTA"), ("test_ema_top1", "test EMA"), ("test_top1_tta", "test flip TTA"))


def readouts_section(records: list) -> str:
    """Each step's weight-EMA and flip-TTA top-1 minus the raw model's of the same runs; empty without them."""
    present = [(key, label) for key, label in READOUTS if any(getattr(r, key) is not None for r in records)]
    if not present:
        return ""
    lines = ["### The same runs read out with the weight EMA and flip TTA", ""]
    lines += ["| step | " + " | ".join(f"{label} top-1 (%) | {label} − raw [95% CI]" for _, label in present) + " |"]
    lines += ["|---|" + "---|---|" * len(present)]
    for name, group in by_step(records).items():
        cells = []
        for key, _ in present:
            raw = "test_top1" if key.startswith("test") else "val_top1"
            both = [r for r in group if getattr(r, key) is not None and getattr(r, raw) is not None]
            gain = paired({r.seed: getattr(r, key) for r in both}, {r.seed: getattr(r, raw) for r in both})
            cells += [_num(mean_of(both, key)), _delta_cell(gain)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = ("Readout − raw: the EMA's (or flip-averaged) top-1 minus the raw top-1 of the same run, mean over seeds with "
            "its 95% paired-t interval (`~`: includes 0; no Holm adjustment here). Neither readout changes training.")
    return "\n".join(["", *lines, "", note, ""])


def per_image_section(out_dir: Path, records: list, comparisons: list[tuple[str, str]], largest: int = 3) -> str:
    """The markdown section of results.md on the runs' predictions; empty without ``predictions.pt`` files."""
    found = Store(out_dir).correct(records)
    if found is None:
        return ""
    split, correct, labels = found
    lines = [f"### Image by image ({split} split, {len(labels)} images)", ""]
    lines += ["| step | vs | seeds | only vs right | only step right | McNemar mid-p | Δ top-1 [95% bootstrap] |", "|---|---|---|---|---|---|---|"]
    effects = []
    for step, reference in comparisons:
        seeds = sorted(set(correct.get(step, {})) & set(correct.get(reference, {})))
        if not seeds:
            continue
        a = torch.stack([correct[step][s] for s in seeds])
        b = torch.stack([correct[reference][s] for s in seeds])
        only_b, only_a = int((b & ~a).sum()), int((a & ~b).sum())
        _, mid_p = mcnemar(only_a, only_b)
        delta = 100 * (a.float().mean() - b.float().mean()).item()
        low, high = bootstrap_difference(a, b)
        lines.append(f"| {step} | {reference} | {len(seeds)} | {only_b} | {only_a} | {mid_p:.3g} | {delta:+.2f} [{low:+.2f}, {high:+.2f}] |")
        effects.append((abs(delta), step, reference, per_class_delta(a, b, labels)))
    lines += ["", "Only vs / only step right: images (summed over the paired seeds) one run of the pair gets right and the other "
              "does not (equal accuracy, different mistakes shows here); McNemar's mid-p treats them as fair coins under no "
              "effect; the bootstrap resamples images and seeds together.", ""]
    for _, step, reference, classes in sorted(effects, key=lambda e: -e[0])[:largest]:
        moves = ", ".join(f"class {cls} {d:+.1f}" for cls, d in classes if not math.isclose(d, 0.0, abs_tol=1e-9)) or "none"
        lines.append(f"- {step} vs {reference}: largest per-class accuracy changes (points): {moves}.")
    return "\n".join([*lines, ""])


def budget_table(records: list, summaries: list[StepSummary]) -> dict[str, dict[float, StepSummary]]:
    """Each step (without its budget suffix) -> budget -> its summary; empty for a spec without budgets."""
    budget_of = {r.step: (r.unbudgeted, r.budget) for r in records if r.budget is not None and r.unbudgeted}
    table: dict[str, dict[float, StepSummary]] = {}
    for s in summaries:
        if s.name in budget_of:
            name, budget = budget_of[s.name]
            table.setdefault(name, {})[budget] = s
    return table


def budget_section(by_budget: dict[str, dict[float, StepSummary]]) -> str:
    """Δ prev of every step at every budget: which tricks pay off only in longer runs."""
    budgets = sorted({b for per_step in by_budget.values() for b in per_step})
    lines = ["### Δ prev against the budget (epoch multiplier)", ""]
    lines += ["| step | " + " | ".join(f"×{b:g}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for name, per_step in by_budget.items():
        lines.append(f"| {name} | " + " | ".join(_delta_cell(per_step[b].delta_prev) if b in per_step else "" for b in budgets) + " |")
    note = "Each budget multiplies trainer.max_epochs, schedule.warmup_epochs, schedule.milestones and model.mixup_off_epochs."
    return "\n".join([*lines, "", note + " Cells as in the table above (paired by seed, Holm-adjusted marks).", ""])


def log_summary(name: str, spec_path: Path, out_dir: Path, summaries: list[StepSummary], records: list, wandb_args: dict[str, Any]) -> None:
    """With ``--wandb``: a run ``<spec> summary`` in the ablation's W&B group with the table, figures and spec."""
    import wandb

    header, rows = table_rows(summaries)
    settings = {key: wandb_args[key] for key in ("project", "entity") if wandb_args.get(key)}
    run = wandb.init(**settings, group=name, name=f"{name} summary", job_type="ablation-summary", dir=str(out_dir),
                     config={"spec": read_yaml(spec_path), "spec_path": str(spec_path)})  # fmt: skip
    try:
        images = {n.removesuffix(".png"): wandb.Image(str(out_dir / n)) for n in ("top1.png", "val_curves.png", "lr.png", "budget.png") if (out_dir / n).is_file()}
        run.log({"results": wandb.Table(columns=header, data=rows), **images})
        run.summary["footer"] = FOOTER
        run.summary["diverged"] = [f"{r.step} seed {r.seed}: {r.note}" for r in records if r.diverged]
        run.save(str(spec_path), base_path=str(spec_path.parent), policy="now")
    finally:
        run.finish()


def figure_top1(summaries: list[StepSummary]) -> Figure:
    """Top-1 per step, error bars = sample std over seeds, each seed as a dot."""
    figure, ax = _figure(max(5.0, 0.8 * len(summaries) + 2))
    x = list(range(len(summaries)))
    std = [0.0 if math.isnan(s.top1_std) else s.top1_std for s in summaries]
    ax.errorbar(x, [s.top1_mean for s in summaries], yerr=std, fmt="o", capsize=4, label="mean ± std")
    for i, s in zip(x, summaries):
        ax.plot([i] * len(s.top1), s.top1, ".", color="gray", alpha=0.6)
    ax.set_xticks(x, [s.name for s in summaries], rotation=30, ha="right")
    return _labelled(figure, ax, "", "val top-1 (%), last epoch", legend_size=None)


def figure_val_curves(records: list) -> Figure:
    """val/top1 per epoch, mean over seeds, one line per step (the records' curves)."""
    figure, ax = _figure()
    for name, runs in by_step([r for r in records if not r.diverged]).items():
        length = min(len(r.val_top1_curve) for r in runs)
        mean = [statistics.fmean(r.val_top1_curve[e] for r in runs) for e in range(length)]
        ax.plot(range(1, length + 1), mean, marker="o", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _labelled(figure, ax, "epoch", "val top-1 (%), mean over seeds")


def figure_lr(out_dir: str | os.PathLike, records: list, max_points: int = 2000) -> Figure:
    """train/lr per optimizer step of each step's run with the lowest seed (from its logged metrics)."""
    figure, ax = _figure()
    for name, runs in by_step([r for r in records if not r.diverged]).items():
        points = [(r["step"], r["train/lr"]) for r in read_metrics(Path(out_dir) / runs[0].run_dir) if "train/lr" in r]
        points = points[:: max(1, len(points) // max_points)]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=f"{name} (seed {runs[0].seed})")
    return _labelled(figure, ax, "optimizer step", "learning rate (head group)")


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
    return _labelled(figure, ax, "budget (epoch multiplier)", "Δ prev top-1 (points)")


def _figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Any]:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _labelled(figure: Figure, ax, xlabel: str, ylabel: str, legend_size: str | None = "small") -> Figure:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    return figure


def write_report(out_dir: str | os.PathLike, title: str | None = None, records: list[RunRecord] | None = None) -> list[StepSummary]:
    """results.csv, results.md and the PNGs in ``out_dir``, from ``records`` (default: every record there)."""
    store = Store(out_dir)
    records = store.records() if records is None else records
    if not records:
        raise UserError(f"{store.out} holds no finished run (no */seed*/result.json): nothing to report.")
    store.export_csv(records)
    summaries = summarize(records)
    text = markdown_table(summaries, title) + more_sections(store.out, records, summaries, store.design())
    atomic_write(store.results_md, text)
    figures = [("top1.png", figure_top1(summaries)), ("val_curves.png", figure_val_curves(records)), ("lr.png", figure_lr(store.out, records))]
    if by_budget := budget_table(records, summaries):
        figures.append(("budget.png", figure_budget(by_budget)))
    for name, figure in figures:
        store.save_figure(name, figure)
    return summaries
