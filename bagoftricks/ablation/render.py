"""The step summaries as text: results.md's table and sections, the terminal table, and the W&B summary run.

All of it is computed from run records (``RunRecord``) and their summaries (``stats.summarize``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bagoftricks.ablation.design import effects_section
from bagoftricks.ablation.evidence import per_image_section
from bagoftricks.ablation.stats import Paired, StepSummary, paired

FOOTER = (
    "top-1: the last epoch's val/top1 (not the best epoch, which is biased upwards), mean ± sample std "
    "(ddof=1) over seeds; 95% CI: half-width of the t-interval of the mean. Δ prev: vs the step this one "
    "builds on (leave-one-out: vs all tricks together; none in factorial designs); Δ base: vs the first step; "
    "in points, paired by seed (the mean of the per-seed differences; "
    "same seed = same initialisation and data order) with its 95% paired-t interval. `~`: the interval "
    "includes 0, the sign is not established; `*`: significant at 5% after Holm's adjustment across "
    "all the table's distinct comparisons; no mark: the interval excludes 0 but Holm's adjustment does not confirm it. "
    "An interval needs two or more seeds whose differences vary: with one seed a cell shows the delta alone, "
    "with differences that are all equal it shows `(no spread)`; neither is marked nor counted in Holm's adjustment. "
    "`†`: some of the step's runs diverged (a loss that is not finite); they are left out of every number and listed below."
)


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "" if value is None or math.isnan(value) else format(value, fmt)


def _delta_cell(d: Paired | None) -> str:
    """``+1.61 [-0.20, +3.42] ~``: the paired delta, its 95% interval, and a mark (see FOOTER)."""
    if d is None:
        return ""
    if math.isnan(d.low):
        return f"{d.delta:+.2f}" + (" (no spread)" if d.n >= 2 else "")
    mark = " *" if d.p_holm < 0.05 else "" if d.trusted else " ~"
    return f"{d.delta:+.2f} [{d.low:+.2f}, {d.high:+.2f}]{mark}"


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


def diverged_note(records: list) -> str:
    """The runs left out of the statistics, one line each; empty when none diverged."""
    lines = [f"- {r.step}, seed {r.seed}: {r.note or 'diverged'} ({r.run_dir})" for r in records if r.diverged]
    return "\n".join(["", "**Diverged runs** (left out of every number above):", *lines, ""]) if lines else ""


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


def more_sections(out_dir: Path, records: list, summaries: list[StepSummary], design: dict | None = None) -> str:
    """The sections of results.md after the per-step table: diverged runs, mixed thread counts, the EMA and
    flip-TTA readouts, a factorial design's effects, the deltas against the budget, and the image-by-image
    comparisons (from the runs' predictions.pt)."""
    text = diverged_note(records)
    kept = [r for r in records if not r.diverged]
    if len(threads := sorted({r.cpu_threads for r in kept if r.cpu_threads})) > 1:
        text += (
            f"\n**Mixed CPU thread counts** ({', '.join(map(str, threads))}): on a CPU the thread count changes the order "
            "of floating-point sums, so a run's numbers depend on it (as on another machine) and the paired deltas here "
            "mix that in; rerun with one `--jobs` value for clean comparisons.\n"
        )
    text += readouts_section(kept)
    if design:
        text += effects_section(design, kept)
    if by_budget := budget_table(kept, summaries):
        text += budget_section(by_budget)
    comparisons = list(dict.fromkeys((s.name, d.reference) for s in summaries for d in (s.delta_prev, s.delta_base) if d))
    return text + per_image_section(out_dir, kept, comparisons)


# ----------------------------------------------------------------------------- EMA and flip TTA


READOUTS = (("val_ema_top1", "EMA"), ("val_top1_tta", "flip TTA"), ("test_ema_top1", "test EMA"), ("test_top1_tta", "test flip TTA"))


def readouts_section(records: list) -> str:
    """Each step's weight-EMA and flip-TTA top-1 against the raw model's of the same runs: the readout minus
    val/top1 (or test/top1), paired run by run, with its 95% paired-t interval. Empty when no run has them."""
    present = [(key, label) for key, label in READOUTS if any(getattr(r, key) is not None for r in records)]
    if not present:
        return ""
    by_step: dict[str, list] = {}
    for record in sorted(records, key=lambda r: (r.step_index, r.seed)):
        by_step.setdefault(record.step, []).append(record)
    lines = ["### The same runs read out with the weight EMA and flip TTA", ""]
    lines += ["| step | " + " | ".join(f"{label} top-1 (%) | {label} − raw [95% CI]" for _, label in present) + " |"]
    lines += ["|---|" + "---|---|" * len(present)]
    for name, group in by_step.items():
        cells = []
        for key, _ in present:
            raw = "test_top1" if key.startswith("test") else "val_top1"
            both = [r for r in group if getattr(r, key) is not None and getattr(r, raw) is not None]
            gain = paired({r.seed: getattr(r, key) for r in both}, {r.seed: getattr(r, raw) for r in both})
            mean = sum(getattr(r, key) for r in both) / len(both) if both else math.nan
            cells += [_num(mean), _delta_cell(gain)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = (
        "Readout − raw: the EMA's (or the flip-averaged) top-1 minus the raw model's top-1 of the same run, the "
        "mean over seeds with its 95% paired-t interval; `~`: the interval includes 0 (no Holm adjustment here, "
        "so no `*`). The raw top-1 is the table's; neither readout changes training."
    )
    return "\n".join(["", *lines, "", note, ""])


# ----------------------------------------------------------------------------- budgets


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


# ----------------------------------------------------------------------------- W&B


def log_summary(name: str, spec_path: Path, out_dir: Path, summaries: list[StepSummary], records: list, wandb_args: dict[str, Any]) -> None:
    """With ``--wandb``: one run ``<spec> summary`` in the ablation's W&B group, so the dashboard compares the
    tricks as it opens: the per-step table (as in results.md), the figures, the diverged runs and the spec."""
    import wandb
    import yaml

    header, rows = table_rows(summaries)
    settings = {key: wandb_args[key] for key in ("project", "entity") if wandb_args.get(key)}
    run = wandb.init(**settings, group=name, name=f"{name} summary", job_type="ablation-summary", dir=str(out_dir),
                     config={"spec": yaml.safe_load(spec_path.read_text()), "spec_path": str(spec_path)})  # fmt: skip
    try:
        images = {n.removesuffix(".png"): wandb.Image(str(out_dir / n)) for n in ("top1.png", "val_curves.png", "lr.png", "budget.png") if (out_dir / n).is_file()}
        run.log({"results": wandb.Table(columns=header, data=rows), **images})
        run.summary["footer"] = FOOTER
        run.summary["diverged"] = [f"{r.step} seed {r.seed}: {r.note}" for r in records if r.diverged]
        run.save(str(spec_path), base_path=str(spec_path.parent), policy="now")
    finally:
        run.finish()
