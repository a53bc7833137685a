"""``budgets: [1, 2, 4]``: every step at several training lengths, to see which tricks pay off only in long runs.

The paper's gains were measured over 120 epochs; mixup, for one, costs accuracy in short runs and helps in
long ones. A budget multiplies the schedule's length: ``trainer.max_epochs``, ``schedule.warmup_epochs``,
``schedule.milestones`` and ``model.mixup_off_epochs`` all scale with it, so the schedule keeps its shape.
The report adds each step's Δ prev at every budget (a table, and ``budget.png``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jsonargparse import Namespace

from bagoftricks.ablation.spec import Run, Spec, set_args
from bagoftricks.errors import ConfigError


def with_budget(spec: Spec, run: Run, config: Namespace) -> Run:
    """``run`` with its schedule's length multiplied by its step's budget (from the run's parsed ``config``)."""
    budget = spec.steps[run.step_index].budget
    if budget is None or budget == 1:
        return run
    where = f"{spec.path}: step {run.step!r}"
    epochs = config.get("trainer.max_epochs")
    if not epochs or epochs < 0 or not math.isclose(epochs * budget, round(epochs * budget)):
        raise ConfigError(f"{where}: budget {budget:g} x trainer.max_epochs {epochs} is not a whole number of epochs; choose budgets that make one.")
    scaled: dict[str, Any] = {"trainer.max_epochs": round(epochs * budget)}
    if config.get("schedule.warmup_epochs"):
        scaled["schedule.warmup_epochs"] = config["schedule.warmup_epochs"] * budget
    if config.get("schedule.milestones"):
        scaled["schedule.milestones"] = [m * budget for m in config["schedule.milestones"]]
    if config.get("model.mixup_off_epochs"):
        scaled["model.mixup_off_epochs"] = round(config["model.mixup_off_epochs"] * budget)
    return dataclasses.replace(run, overrides=(*run.overrides, *set_args(scaled)))
