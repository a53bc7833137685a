"""Results of an ablation: per-run metrics from the logged CSVs, ``results.csv``, the per-step table, plots.

The notebook ``notebooks/ablation_report.ipynb`` calls these same functions on a results folder.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bagoftricks.ablation.design import effects_section
from bagoftricks.ablation.evidence import per_image_section
from bagoftricks.ablation.files import atomic_write
from bagoftricks.ablation.stats import Paired, holm, mean_ci, paired

# One row per run; metrics in percent (top-1/top-5) as the paper reports them.
COLUMNS = (
    "step_index", "step", "parent", "seed", "val_top1", "val_top1_best", "val_top5", "val_loss", "test_top1", "test_top5",
    "val_ema_top1", "val_top1_tta", "test_ema_top1", "test_top1_tta", "epochs", "wall_time_s", "time_per_epoch_s",
    "params", "macs", "tricks", "run_dir", "budget", "unbudgeted", "cpu_threads",
)  # fmt: skip
FOOTER = (
    "top-1: the last epoch's val/top1 (not the best epoch, which is biased upwards), mean ± sample std "
    "(ddof=1) over seeds; 95% CI: half-width of the t-interval of the mean. Δ prev: vs the step this one "
    "builds on (leave-one-out: vs all tricks together; none in factorial designs); Δ base: vs the first step; "
    "in points, paired by seed (the mean of the per-seed differences; "
    "same seed = same initialisation and data order) with its 95% paired-t interval. `~`: the interval "
    "includes 0, the sign is not established; `*`: significant at 5% after Holm's adjustment across "
    "all the table's distinct comparisons; no mark: the interval excludes 0 but Holm's adjustment does not confirm it."
)


# ----------------------------------------------------------------------------- per-run metrics


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """The rows the CSVLogger wrote, over all parts of a resumed run, as floats (empty cells dropped).

    A resumed run's earlier parts are ``metrics.part<k>.csv`` (the CSVLogger deletes ``metrics.csv``
    when it starts); rows of an earlier part at or after the first step of the next one were
    computed again after the resume and are dropped.
    """
    parts = sorted(run_dir.glob("metrics.part*.csv"), key=lambda p: int(p.stem.removeprefix("metrics.part")))
    parts += [run_dir / "metrics.csv"] if (run_dir / "metrics.csv").is_file() else []
    tables = []
    for part in parts:
        with open(part, newline="") as f:
            tables.append([{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)])
    rows: list[dict[str, float]] = []
    for i, table in enumerate(tables):
        later = [r["step"] for t in tables[i + 1 :] for r in t if "train/loss" in r]
        cut = min(later) if later else math.inf
        rows += [r for r in table if r.get("step", -1) < cut]
    return rows


def per_epoch(rows: list[dict[str, float]], key: str) -> dict[int, float]:
    """The value of an epoch-level metric for each epoch (the last logged one if an epoch repeats)."""
    return {int(r["epoch"]): r[key] for r in rows if key in r and "epoch" in r}


def last_value(rows: list[dict[str, float]], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return values[-1] if values else None


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def summarize_run(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Metrics of one finished run from its logged rows (percent for accuracies)."""
    val_top1 = per_epoch(rows, "val/top1")
    curve = [100 * val_top1[e] for e in sorted(val_top1)]
    times = per_epoch(rows, "time/epoch_s")
    epochs = max([*times, *val_top1], default=-1) + 1
    return {
        "val_top1": curve[-1] if curve else None,
        "val_top1_best": max(curve) if curve else None,
        "val_top5": _percent(last_value(rows, "val/top5")),
        "val_loss": last_value(rows, "val/loss"),
        "test_top1": _percent(last_value(rows, "test/top1")),
        "test_top5": _percent(last_value(rows, "test/top5")),
        # The same run read out with its weight EMA and with flip TTA (model.ema_decay, model.flip_tta); None when off.
        "val_ema_top1": _percent(last_value(rows, "val_ema/top1")),
        "val_top1_tta": _percent(last_value(rows, "val/top1_tta")),
        "test_ema_top1": _percent(last_value(rows, "test_ema/top1")),
        "test_top1_tta": _percent(last_value(rows, "test/top1_tta")),
        "epochs": epochs,
        "time_per_epoch_s": statistics.fmean(times.values()) if times else None,
        "val_top1_curve": curve,
    }


# ----------------------------------------------------------------------------- results.csv


def write_results_csv(out_dir: Path, results: list[dict[str, Any]]) -> Path:
    """One row per finished run (the ``result.json`` contents), rewritten atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for result in results:
        row = {k: result.get(k) for k in COLUMNS}
        writer.writerow({k: "; ".join(v) if isinstance(v, list) else "" if v is None else v for k, v in row.items()})
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "results.csv", buffer.getvalue())
    return out_dir / "results.csv"


def load_results(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``results.csv`` with numbers as numbers (None where empty)."""
    path = Path(out_dir) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `bagoftricks ablate SPEC --out {out_dir}` first.")
    text_columns = ("step", "parent", "tricks", "run_dir", "unbudgeted")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (v if k in text_columns else None if v == "" else float(v)) for k, v in row.items()} for row in rows]


# ----------------------------------------------------------------------------- the per-step summary


@dataclass
class StepSummary:
    index: int
    name: str
    parent: str
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


def in_spec_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of results.csv by step, then seed."""
    return sorted(rows, key=lambda r: (r["step_index"], r["seed"]))


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(values) if values else math.nan


def _with_holm(summaries: list[StepSummary]) -> list[StepSummary]:
    """Holm's adjustment over the distinct comparisons of the table (a step whose parent is the base is one test)."""
    tests = {(s.name, d.reference): d for s in summaries for d in (s.delta_prev, s.delta_base) if d is not None}
    adjusted = dict(zip(tests, holm([d.p for d in tests.values()])))
    for s in summaries:
        for field in ("delta_prev", "delta_base"):
            if (d := getattr(s, field)) is not None:
                setattr(s, field, dataclasses.replace(d, p_holm=adjusted[(s.name, d.reference)]))
    return summaries


def summarize(rows: list[dict[str, Any]]) -> list[StepSummary]:
    """One summary per step (in spec order) from the rows of ``results.csv``."""
    by_step: dict[str, list[dict[str, Any]]] = {}
    for row in in_spec_order(rows):
        by_step.setdefault(row["step"], []).append(row)
    by_seed = {name: {int(r["seed"]): r["val_top1"] for r in group if r["val_top1"] is not None} for name, group in by_step.items()}
    base = next(iter(by_step), "")

    def delta(name: str, other: str) -> Paired | None:
        return paired(by_seed[name], by_seed[other], other) if other and other != name and other in by_seed else None

    summaries = []
    for name, group in by_step.items():
        top1 = list(by_seed[name].values())
        parent = group[0]["parent"] or ""
        summary = StepSummary(int(group[0]["step_index"]), name, parent, len(top1), top1, *mean_ci(top1),
                              delta(name, parent), delta(name, base),
                              _mean(group, "val_top5"), _mean(group, "test_top1"),
                              _mean(group, "time_per_epoch_s"), _mean(group, "params"), _mean(group, "macs"))  # fmt: skip
        summaries.append(summary)
    return _with_holm(summaries)


# ----------------------------------------------------------------------------- the table


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "" if value is None or math.isnan(value) else format(value, fmt)


def _delta_cell(d: Paired | None) -> str:
    """``+1.61 [-0.20, +3.42] ~``: the paired delta, its 95% interval, and a mark (see FOOTER)."""
    if d is None:
        return ""
    if math.isnan(d.low):
        return f"{d.delta:+.2f}"
    mark = " *" if d.p_holm < 0.05 else "" if d.trusted else " ~"
    return f"{d.delta:+.2f} [{d.low:+.2f}, {d.high:+.2f}]{mark}"


def table_rows(summaries: list[StepSummary]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-step table (shared by results.md, the printed table and the notebook)."""
    has_test = any(not math.isnan(s.test_top1_mean) for s in summaries)
    header = ["#", "step", "n", "top-1 (%)", "95% CI", "Δ prev [95% CI]", "Δ base [95% CI]", "top-5 (%)"]
    header += ["test top-1 (%)"] * has_test + ["s/epoch", "params (M)", "GMACs"]
    rows = []
    for s in summaries:
        top1 = _num(s.top1_mean) + (f" ± {_num(s.top1_std)}" if not math.isnan(s.top1_std) else "")
        ci = f"±{_num(s.top1_ci)}" if not math.isnan(s.top1_ci) else ""
        cells = [str(s.index), s.name, str(s.n), top1, ci]
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


def print_table(summaries: list[StepSummary], title: str | None = None, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

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


# ----------------------------------------------------------------------------- plots


def _figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Any]:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # Agg: no display, no global pyplot state
    return figure, figure.add_subplot()


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


def figure_val_curves(out_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> Figure:
    """val/top1 per epoch, mean over seeds, one line per step (from each run's result.json)."""
    figure, ax = _figure()
    curves: dict[str, list[list[float]]] = {}
    for row in in_spec_order(rows):
        result = json.loads((Path(out_dir) / row["run_dir"] / "result.json").read_text())
        curves.setdefault(row["step"], []).append(result.get("val_top1_curve") or [])
    for name, runs in curves.items():
        length = min(len(c) for c in runs)
        mean = [statistics.fmean(c[e] for c in runs) for e in range(length)]
        ax.plot(range(1, length + 1), mean, marker="o", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("val top-1 (%), mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def figure_lr(out_dir: str | os.PathLike, rows: list[dict[str, Any]], max_points: int = 2000) -> Figure:
    """train/lr per optimizer step of each step's run with the lowest seed."""
    figure, ax = _figure()
    first: dict[str, dict[str, Any]] = {}
    for row in in_spec_order(rows):
        first.setdefault(row["step"], row)
    for name, row in first.items():
        points = [(r["step"], r["train/lr"]) for r in read_metrics(Path(out_dir) / row["run_dir"]) if "train/lr" in r]
        points = points[:: max(1, len(points) // max_points)]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=f"{name} (seed {int(row['seed'])})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate (head group)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def more_sections(out_dir: Path, rows: list[dict[str, Any]], summaries: list[StepSummary]) -> str:
    """The sections of results.md after the per-step table: a factorial design's effects (from design.json),
    the deltas against the budget, and the image-by-image comparisons (from the runs' predictions.pt)."""
    text = ""
    if len(threads := sorted({int(r["cpu_threads"]) for r in rows if r.get("cpu_threads")})) > 1:
        text += (
            f"\n**Mixed CPU thread counts** ({', '.join(map(str, threads))}): on a CPU the thread count changes the order "
            "of floating-point sums, so a run's numbers depend on it (as on another machine) and the paired deltas here "
            "mix that in; rerun with one `--jobs` value for clean comparisons.\n"
        )
    text += readouts_section(rows)
    if (out_dir / "design.json").is_file():
        text += effects_section(json.loads((out_dir / "design.json").read_text()), rows)
    if by_budget := _by_budget(rows, summaries):
        text += budget_section(by_budget)
    comparisons = list(dict.fromkeys((s.name, d.reference) for s in summaries for d in (s.delta_prev, s.delta_base) if d))
    return text + per_image_section(out_dir, rows, comparisons)


def write_report(out_dir: str | os.PathLike, title: str | None = None) -> list[StepSummary]:
    """results.md, top1.png, val_curves.png and lr.png in ``out_dir`` from its results.csv."""
    out_dir = Path(out_dir)
    rows = load_results(out_dir)
    summaries = summarize(rows)
    atomic_write(out_dir / "results.md", markdown_table(summaries, title) + more_sections(out_dir, rows, summaries))
    by_budget = _by_budget(rows, summaries)
    figures = [("top1.png", figure_top1(summaries)), ("val_curves.png", figure_val_curves(out_dir, rows)), ("lr.png", figure_lr(out_dir, rows))]
    for name, figure in figures + ([("budget.png", figure_budget(by_budget))] if by_budget else []):
        figure.savefig(out_dir / name, dpi=120)
    return summaries


# ----------------------------------------------------------------------------- EMA and flip TTA


READOUTS = (("val_ema_top1", "EMA"), ("val_top1_tta", "flip TTA"), ("test_ema_top1", "test EMA"), ("test_top1_tta", "test flip TTA"))


def readouts_section(rows: list[dict[str, Any]]) -> str:
    """Each step's weight-EMA and flip-TTA top-1 against the raw model's of the same runs: the readout minus
    val/top1 (or test/top1), paired run by run, with its 95% paired-t interval. Empty when no run has them."""
    present = [(key, label) for key, label in READOUTS if any(r.get(key) is not None for r in rows)]
    if not present:
        return ""
    by_step: dict[str, list[dict[str, Any]]] = {}
    for row in in_spec_order(rows):
        by_step.setdefault(row["step"], []).append(row)
    lines = ["### The same runs read out with the weight EMA and flip TTA", ""]
    lines += ["| step | " + " | ".join(f"{label} top-1 (%) | {label} − raw [95% CI]" for _, label in present) + " |"]
    lines += ["|---|" + "---|---|" * len(present)]
    for name, group in by_step.items():
        cells = []
        for key, _ in present:
            raw = "test_top1" if key.startswith("test") else "val_top1"
            both = [r for r in group if r.get(key) is not None and r.get(raw) is not None]
            gain = paired({int(r["seed"]): r[key] for r in both}, {int(r["seed"]): r[raw] for r in both})
            cells += [_num(_mean(both, key)), _delta_cell(gain)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = (
        "Readout − raw: the EMA's (or the flip-averaged) top-1 minus the raw model's top-1 of the same run, the "
        "mean over seeds with its 95% paired-t interval; `~`: the interval includes 0 (no Holm adjustment here, "
        "so no `*`). The raw top-1 is the table's; neither readout changes training."
    )
    return "\n".join(["", *lines, "", note, ""])


# ----------------------------------------------------------------------------- budgets


def _by_budget(rows: list[dict[str, Any]], summaries: list[StepSummary]) -> dict[str, dict[float, StepSummary]]:
    """Each step (without its budget suffix) -> budget -> its summary; empty for a spec without budgets."""
    budget_of = {r["step"]: (r["unbudgeted"], r["budget"]) for r in rows if r.get("budget") is not None and r.get("unbudgeted")}
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
