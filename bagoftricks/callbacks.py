"""The LR schedule as a callback: a closed-form function of the global step, set before every step."""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import Callback

from bagoftricks.tricks import lr_at


class LRSchedule(Callback):
    """Sets every parameter group's LR from ``lr_at(global_step, ...)`` before each optimizer step.

    Because the LR depends only on the global step, a run resumed from a checkpoint gets exactly
    the LR it would have had, and warmup and decay are both per step (He et al. 2019, sec. 3.1
    and 5.1), never per epoch. Each group's peak LR is its ``base_lr`` (set by the module, so
    linear scaling and discriminative LRs are already in it).

    Args:
        name: 'constant' | 'step' | 'cosine' | 'onecycle'.
        warmup_epochs: linear warmup from 0 to the peak LR, in epochs (may be fractional).
        final_lr_factor: cosine ends at this fraction of the peak LR.
        milestones: epochs at which the 'step' schedule multiplies the LR by ``gamma``.
        gamma: the 'step' schedule's factor.
        pct_start: share of training that 'onecycle' spends rising to the peak.
        div_factor: 'onecycle' starts at peak / div_factor.
        final_div_factor: 'onecycle' ends at peak / (div_factor * final_div_factor).
    """

    def __init__(
        self,
        name: Literal["constant", "step", "cosine", "onecycle"] = "constant",
        warmup_epochs: float = 0.0,
        final_lr_factor: float = 0.0,
        milestones: list[float] | None = None,
        gamma: float = 0.1,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        if warmup_epochs < 0:
            raise ValueError(f"schedule.warmup_epochs must be >= 0, got {warmup_epochs}.")
        self.name, self.warmup_epochs, self.final_lr_factor = name, warmup_epochs, final_lr_factor
        self.milestones, self.gamma = list(milestones or []), gamma
        self.pct_start, self.div_factor, self.final_div_factor = pct_start, div_factor, final_div_factor
        self.total_steps = self.warmup_steps = 0
        self.milestone_steps: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("The LR schedule needs a finite training length; set trainer.max_epochs or trainer.max_steps.")
        self.total_steps = int(total)
        # Optimizer steps per epoch, so warmup and milestones given in epochs become steps.
        batches = trainer.num_training_batches
        per_epoch = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else self.total_steps
        self.warmup_steps = round(self.warmup_epochs * per_epoch)
        self.milestone_steps = [round(m * per_epoch) for m in self.milestones]
        self.lr_factor(0)  # lr_at refuses impossible settings (warmup longer than training, ...) before step 0

    def lr_factor(self, step: int) -> float:
        """The LR at ``step`` as a fraction of the peak LR."""
        return lr_at(
            step,
            self.total_steps,
            1.0,
            warmup_steps=self.warmup_steps,
            schedule=self.name,
            final_lr=self.final_lr_factor,
            milestones=self.milestone_steps,
            gamma=self.gamma,
            pct_start=self.pct_start,
            div_factor=self.div_factor,
            final_div_factor=self.final_div_factor,
        )

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        factor = self.lr_factor(trainer.global_step)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
        # The head's group (lr_scale 1) carries the reference LR.
        head_lr = trainer.optimizers[0].param_groups[-1]["lr"]
        pl_module.log("train/lr", head_lr, on_step=True, on_epoch=False)
