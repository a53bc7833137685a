"""The report of an output folder: its records -> statistics (``stats``) -> results.md and the terminal table
(``render``) and the PNGs (``figures``). The notebook ``notebooks/ablation_report.ipynb`` calls the same functions."""

from __future__ import annotations

import os

from bagoftricks.ablation.figures import figure_budget, figure_lr, figure_top1, figure_val_curves
from bagoftricks.ablation.record import RunRecord
from bagoftricks.ablation.render import budget_table, markdown_table, more_sections
from bagoftricks.ablation.stats import StepSummary, summarize
from bagoftricks.ablation.store import Store, atomic_write


def load_results(out_dir: str | os.PathLike, spec=None) -> list[RunRecord]:
    """The records of every finished run in ``out_dir`` (with ``spec``: of its steps), by step, then seed."""
    store = Store(out_dir)
    if not store.out.is_dir():
        raise FileNotFoundError(f"{store.out} does not exist; run `bagoftricks ablate SPEC --out {out_dir}` first.")
    return store.records(spec)


def write_report(out_dir: str | os.PathLike, title: str | None = None, records: list[RunRecord] | None = None) -> list[StepSummary]:
    """results.csv, results.md, top1.png, val_curves.png and lr.png (budget.png with budgets) in ``out_dir``,
    from ``records`` (by default every record in the folder)."""
    store = Store(out_dir)
    records = store.records() if records is None else records
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
