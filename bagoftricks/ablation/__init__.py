"""``bagoftricks ablate SPEC``: an ablation spec (README.md, "Run an ablation", shows its keys) -> one training
run per step and seed -> a results table. The pipeline: ``spec`` -> ``design`` -> ``plan`` (``<out>/plan.json``)
-> ``launch`` (this process, ``--jobs`` workers or a SLURM array) -> ``execute`` -> ``record`` (``result.json``)
-> ``store`` -> ``render`` (``stats``).
"""

from bagoftricks.ablation.command import ablate, ablate_main
from bagoftricks.ablation.design import Design, design, effects
from bagoftricks.ablation.plan import PlannedRun, plan
from bagoftricks.ablation.record import RunRecord
from bagoftricks.ablation.render import figure_lr, figure_top1, figure_val_curves, markdown_table, more_sections, write_report
from bagoftricks.ablation.spec import Spec, load_spec
from bagoftricks.ablation.stats import Paired, holm, mcnemar, mean_ci, paired, summarize
from bagoftricks.ablation.store import Store

__all__ = [
    "Design", "Paired", "PlannedRun", "RunRecord", "Spec", "Store", "ablate", "ablate_main", "design", "effects",
    "figure_lr", "figure_top1", "figure_val_curves", "holm", "load_spec", "markdown_table", "mcnemar",
    "mean_ci", "more_sections", "paired", "plan", "summarize", "write_report",
]  # fmt: skip
