"""``bagoftricks ablate SPEC``: an ablation spec -> one training run per step and seed -> a results table.

A spec (``experiments/<dataset>/ablation.yaml``)::

    base: base.yaml                    # a LightningCLI config, or a list stacked in order; relative to the spec
    seeds: [0, 1, 2]
    mode: cumulative                   # each step adds its changes to the previous one; `each`: every step
                                       # alone on top of the first step (the baseline); `leave-one-out`: the
                                       # baseline, all later steps (the tricks) together, then all but one, for
                                       # each; `factorial`: the tricks on/off in a two-level design
    runs_per_seed: 16                  # factorial only: a regular 2^(k-p) fraction of resolution IV or more
                                       # (default: the full 2^k design); see design.GENERATORS
    budgets: [1, 2, 4]                 # optional: every step again at each epoch multiplier
    set: {trainer.max_epochs: 10}      # optional, every run: dotted CLI keys
    test: true                         # optional: evaluate the final weights on the test split too
    keep_checkpoints: true             # optional: false deletes a finished run's checkpoints
    steps:
      - name: baseline
      - name: +warmup
        set: {schedule.warmup_epochs: 1}
      - name: +cosine
        config: cosine.yaml            # a diff config (or a list of them)
      - name: cosine + LS
        from: +cosine                  # optional: build on a named earlier step instead
        set: {model.label_smoothing: 0.1}

The pipeline: ``spec`` (YAML in) -> ``design`` (rows) -> ``plan`` (``PlannedRun``s, ``<out>/plan.json``) ->
``launch`` (in this process, ``--jobs`` workers or one SLURM job array) -> ``execute`` (one run) -> ``record``
(``RunRecord``, the run's ``result.json``) -> ``store`` (the output folder) -> ``render`` (``stats``: results.md,
results.csv, the PNGs). Each run is ``bagoftricks fit -c BASE... [the spec's set] [each step's -c/--key in its
chain] --seed_everything S`` in ``<out>/<NN-step>/seed<S>/``. A finished run is never trained again, whichever
launcher ran it; a killed run resumes from its ``last.ckpt``; a run whose loss is not finite is recorded as
diverged and left out of the statistics. Reported top-1 is the last epoch's ``val/top1`` (the best epoch's is
biased upwards); ``test/*`` comes from the final weights on the datamodule's test split, where it has one
distinct from validation.
"""

from bagoftricks.ablation.command import ablate, ablate_main
from bagoftricks.ablation.design import Design, design, effects
from bagoftricks.ablation.plan import PlannedRun, Run, plan
from bagoftricks.ablation.record import RunRecord
from bagoftricks.ablation.render import figure_lr, figure_top1, figure_val_curves, load_results, markdown_table, more_sections, write_report
from bagoftricks.ablation.spec import Spec, load_spec
from bagoftricks.ablation.stats import Paired, holm, mcnemar, mean_ci, paired, summarize, t_quantile
from bagoftricks.ablation.store import Store

__all__ = [
    "Design", "Paired", "PlannedRun", "Run", "RunRecord", "Spec", "Store", "ablate", "ablate_main", "design", "effects",
    "figure_lr", "figure_top1", "figure_val_curves", "holm", "load_results", "load_spec", "markdown_table", "mcnemar",
    "mean_ci", "more_sections", "paired", "plan", "summarize", "t_quantile", "write_report",
]  # fmt: skip
