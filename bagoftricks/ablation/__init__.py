"""``bagoftricks ablate SPEC``: an ablation spec -> one training run per step and seed -> a results table.

A spec (``experiments/<dataset>/ablation.yaml``; README.md, "Run an ablation", explains the modes)::

    base: base.yaml                # LightningCLI config(s), stacked in order; paths relative to the spec
    seeds: [0, 1, 2]
    mode: cumulative               # or each, leave-one-out, factorial
    runs_per_seed: 16              # factorial only: a regular 2^(k-p) fraction (default: the full 2^k)
    budgets: [1, 2, 4]             # optional: every step again at each epoch multiplier
    set: {trainer.max_epochs: 10}  # optional, every run: dotted CLI keys
    test: true                     # optional: evaluate the final weights on the test split too
    keep_checkpoints: true         # optional: false deletes a finished run's checkpoints
    steps:
      - name: baseline
      - name: +warmup
        set: {schedule.warmup_epochs: 1}
      - name: +cosine
        config: cosine.yaml        # a diff config (or a list of them)
      - name: cosine + LS
        from: +cosine              # optional: build on a named earlier step instead
        set: {model.label_smoothing: 0.1}

The pipeline: ``spec`` -> ``design`` -> ``plan`` (``<out>/plan.json``) -> ``launch`` (this process, ``--jobs``
workers or a SLURM array) -> ``execute`` -> ``record`` (``result.json``) -> ``store`` -> ``render`` (``stats``).
"""

from bagoftricks.ablation.command import ablate, ablate_main
from bagoftricks.ablation.design import Design, design, effects
from bagoftricks.ablation.plan import PlannedRun, plan
from bagoftricks.ablation.record import RunRecord
from bagoftricks.ablation.render import figure_lr, figure_top1, figure_val_curves, load_results, markdown_table, more_sections, write_report
from bagoftricks.ablation.spec import Spec, load_spec
from bagoftricks.ablation.stats import Paired, holm, mcnemar, mean_ci, paired, summarize
from bagoftricks.ablation.store import Store

__all__ = [
    "Design", "Paired", "PlannedRun", "RunRecord", "Spec", "Store", "ablate", "ablate_main", "design", "effects",
    "figure_lr", "figure_top1", "figure_val_curves", "holm", "load_results", "load_spec", "markdown_table", "mcnemar",
    "mean_ci", "more_sections", "paired", "plan", "summarize", "write_report",
]  # fmt: skip
