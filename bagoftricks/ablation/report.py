"""Results of an ablation: per-run metrics from the logged CSVs, ``results.csv``, the per-step table, plots.

The notebook ``notebooks/ablation_report.ipynb`` calls these same functions on a results folder.
"""

from __future__ import annotations

import csv
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

# One row per run; metrics in percent (top-1/top-5) as the paper reports them.
COLUMNS = (
    "step_index", "step", "parent", "seed", "val_top1", "val_top1_best", "val_top5", "val_loss", "test_top1", "test_top5",
    "epochs", "wall_time_s", "time_per_epoch_s", "params", "macs", "tricks", "run_dir",
)  # fmt: skip
FOOTER = (
    "top-1: the last epoch's val/top1 (not the best epoch, which is biased upwards), mean ± sample std "
    "(ddof=1) over seeds; 95% CI: half-width of the t-interval of the mean. Δ prev: vs the step this one "
    "builds on; Δ base: vs the first step; both in points. `~`: |Δ| ≤ the 95% Welch t-interval half-width "
    "of the difference, i.e. within seed noise (not significant at 5%)."
)


def atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file and ``os.replace``, so readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a file behind, under any name
        raise


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
    text_columns = ("step", "parent", "tricks", "run_dir")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (v if k in text_columns else None if v == "" else float(v)) for k, v in row.items()} for row in rows]


# ----------------------------------------------------------------------------- statistics


def t_quantile(df: float) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95%)."""
    from scipy.stats import t  # scipy comes with scikit-learn, a dependency

    return float(t.ppf(0.975, df))


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


def welch_half_width(a: list[float], b: list[float]) -> float:
    """Half-width of the 95% Welch t-interval of mean(a) - mean(b); NaN with fewer than 2 values in either."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return 0.0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    return t_quantile(df) * math.sqrt(va + vb)


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
    delta_prev: float | None
    delta_prev_hw: float | None
    delta_base: float | None
    delta_base_hw: float | None
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


def _delta(top1: dict[str, list[float]], name: str, other: str) -> tuple[float | None, float | None]:
    """Difference of mean top-1 of step ``name`` minus step ``other``, and its 95% Welch half-width."""
    if not other or other == name or other not in top1:
        return None, None
    return mean_ci(top1[name])[0] - mean_ci(top1[other])[0], welch_half_width(top1[name], top1[other])


def summarize(rows: list[dict[str, Any]]) -> list[StepSummary]:
    """One summary per step (in spec order) from the rows of ``results.csv``."""
    by_step: dict[str, list[dict[str, Any]]] = {}
    for row in in_spec_order(rows):
        by_step.setdefault(row["step"], []).append(row)
    top1 = {name: [r["val_top1"] for r in group if r["val_top1"] is not None] for name, group in by_step.items()}
    base = next(iter(by_step), "")
    summaries = []
    for name, group in by_step.items():
        mean, std, ci = mean_ci(top1[name])
        parent = group[0]["parent"] or ""
        summary = StepSummary(int(group[0]["step_index"]), name, parent, len(top1[name]), top1[name], mean, std, ci,
                              *_delta(top1, name, parent), *_delta(top1, name, base),
                              _mean(group, "val_top5"), _mean(group, "test_top1"),
                              _mean(group, "time_per_epoch_s"), _mean(group, "params"), _mean(group, "macs"))  # fmt: skip
        summaries.append(summary)
    return summaries


# ----------------------------------------------------------------------------- the table


def within_noise(delta: float, half_width: float) -> bool:
    return not math.isnan(half_width) and abs(delta) <= half_width


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "" if value is None or math.isnan(value) else format(value, fmt)


def _delta_cell(value: float | None, half_width: float | None) -> str:
    if value is None:
        return ""
    return f"{value:+.2f}" + (" ~" if within_noise(value, half_width) else "")


def table_rows(summaries: list[StepSummary]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-step table (shared by results.md, the printed table and the notebook)."""
    has_test = any(not math.isnan(s.test_top1_mean) for s in summaries)
    header = ["#", "step", "n", "top-1 (%)", "95% CI", "Δ prev", "Δ base", "top-5 (%)"]
    header += ["test top-1 (%)"] * has_test + ["s/epoch", "params (M)", "GMACs"]
    rows = []
    for s in summaries:
        top1 = _num(s.top1_mean) + (f" ± {_num(s.top1_std)}" if not math.isnan(s.top1_std) else "")
        ci = f"±{_num(s.top1_ci)}" if not math.isnan(s.top1_ci) else ""
        cells = [str(s.index), s.name, str(s.n), top1, ci]
        cells += [_delta_cell(s.delta_prev, s.delta_prev_hw), _delta_cell(s.delta_base, s.delta_base_hw)]
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


def write_report(out_dir: str | os.PathLike, title: str | None = None) -> list[StepSummary]:
    """results.md, top1.png, val_curves.png and lr.png in ``out_dir`` from its results.csv."""
    out_dir = Path(out_dir)
    rows = load_results(out_dir)
    summaries = summarize(rows)
    atomic_write(out_dir / "results.md", markdown_table(summaries, title))
    for name, figure in (
        ("top1.png", figure_top1(summaries)),
        ("val_curves.png", figure_val_curves(out_dir, rows)),
        ("lr.png", figure_lr(out_dir, rows)),
    ):
        figure.savefig(out_dir / name, dpi=120)
    return summaries
