"""The LR schedule (a closed-form function of the global step, set before every step), progressive
resizing (the training image size as a function of the global step), and the raw per-step log of
loss and LR, written without a host sync per step."""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from bagoftricks.errors import ConfigError, TrainingDivergedError
from bagoftricks.models import ResNet, min_image_size
from bagoftricks.tricks import SCHEDULES, lr_at, progressive_scale, scaled_side


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
        if name not in SCHEDULES:
            raise ConfigError(f"schedule.name must be one of {', '.join(SCHEDULES)}, got {name!r}.")
        if not 0 <= warmup_epochs < math.inf:
            raise ConfigError(f"schedule.warmup_epochs must be a number of epochs >= 0, got {warmup_epochs}.")
        if name == "onecycle" and warmup_epochs > 0:
            raise ConfigError(
                "schedule.warmup_epochs must be 0 with schedule.name onecycle, which warms up by itself (see schedule.pct_start)."
            )
        if name == "onecycle" and not 0 < pct_start < 1:
            raise ConfigError(f"schedule.pct_start must be in (0, 1), got {pct_start}.")
        # Every factor below multiplies or divides the LR: a negative one trains with a negative LR,
        # a zero divisor stops at the first step.
        if not 0 <= final_lr_factor <= 1:
            raise ConfigError(f"schedule.final_lr_factor must be in [0, 1] (a fraction of the peak LR), got {final_lr_factor}.")
        if not gamma > 0:
            raise ConfigError(f"schedule.gamma must be > 0 (the step schedule multiplies the LR by it; 0.1 is usual), got {gamma}.")
        if any(m < 0 for m in milestones or []):
            raise ConfigError(f"schedule.milestones must be epochs >= 0, got {list(milestones or [])}.")
        for key, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
            if not value > 0:
                raise ConfigError(f"schedule.{key} must be > 0 (one-cycle divides the peak LR by it), got {value}.")
        self.name, self.warmup_epochs, self.final_lr_factor = name, warmup_epochs, final_lr_factor
        self.milestones, self.gamma = list(milestones or []), gamma
        self.pct_start, self.div_factor, self.final_div_factor = pct_start, div_factor, final_div_factor
        self.total_steps = self.warmup_steps = 0
        self.milestone_steps: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ConfigError("The LR schedule needs a finite training length; set trainer.max_epochs or trainer.max_steps.")
        self.total_steps = int(total)
        # Optimizer steps per epoch, so warmup and milestones given in epochs become steps.
        batches = trainer.num_training_batches
        per_epoch = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else self.total_steps
        self.warmup_steps = round(self.warmup_epochs * per_epoch)
        self.milestone_steps = [round(m * per_epoch) for m in self.milestones]
        if self.warmup_steps > self.total_steps:
            raise ConfigError(
                f"schedule.warmup_epochs ({self.warmup_steps} steps) is longer than training "
                f"({self.total_steps} steps); shorten the warmup or train longer."
            )

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


class ProgressiveResizing(Callback):
    """Progressive resizing (fast.ai; composer's schedule), the CLI's ``progressive.*`` group: the
    training batches are downsampled on their device to ``initial_scale`` of their side for the
    first ``delay_fraction`` of the optimizer steps, grow linearly back to full size until
    ``finetune_fraction`` of training is left, and stay full size after it. Validation, test and the
    LR schedule are untouched; sides are multiples of ``size_increment``, never below what the
    backbone takes. ``initial_scale: 1`` (the default) is off.
    """

    def __init__(
        self, initial_scale: float = 1.0, delay_fraction: float = 0.5, finetune_fraction: float = 0.2, size_increment: int = 4
    ) -> None:
        if not 0 < initial_scale <= 1:
            raise ConfigError(f"progressive.initial_scale must be in (0, 1] (1 = off; composer uses 0.5), got {initial_scale}.")
        if not (0 <= delay_fraction and 0 <= finetune_fraction and delay_fraction + finetune_fraction <= 1):
            raise ConfigError(
                f"progressive.delay_fraction ({delay_fraction}) and progressive.finetune_fraction ({finetune_fraction}) "
                "must be at least 0 and sum to at most 1."
            )
        if size_increment < 1:
            raise ConfigError(f"progressive.size_increment must be at least 1, got {size_increment}.")
        self.initial_scale, self.delay_fraction, self.finetune_fraction = initial_scale, delay_fraction, finetune_fraction
        self.size_increment = size_increment
        self.total_steps, self.smallest = 1, 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.estimated_stepping_batches  # infinite only without a training length, which LRSchedule refuses
        self.total_steps = max(1, int(total)) if math.isfinite(total) else 1
        backbone = getattr(pl_module, "backbone", None)
        self.smallest = min_image_size(backbone) if isinstance(backbone, ResNet) else 1

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.initial_scale == 1:
            return
        scale = progressive_scale(trainer.global_step / self.total_steps, self.initial_scale, self.delay_fraction, self.finetune_fraction)
        side = scaled_side(max(batch[0].shape[-2:]), scale, self.size_increment, self.smallest)
        if side != pl_module.tricks.image_size:
            rank_zero_info(f"progressive resizing: training at {side} px from step {trainer.global_step}")
            pl_module.tricks.image_size = side

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.initial_scale != 1:
            pl_module.tricks.image_size = None


class StepLog(Callback):
    """``train/loss`` and ``train/lr``: one raw value per optimizer step (no smoothing), kept on the
    device and written to every logger in one transfer every ``trainer.log_every_n_steps`` steps,
    with their true step numbers.

    Reading a device value on the host (``.item()``, ``if`` on a tensor) makes the CPU wait for
    the GPU to finish every queued kernel; once per step, that idles a fast GPU (airbench and
    Lightning's performance guide avoid it). The non-finite loss guard runs on the values as they
    are read, so training stops at the first flush after a NaN, naming the step where it appeared.
    The progress bar shows the latest flushed loss. The module adds this callback itself.
    """

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, float]] = []  # (global step, epoch, lr) of each optimizer step
        self.losses: list[torch.Tensor] = []  # the same steps' mean losses, still on the device
        self.pending: torch.Tensor | None = None  # loss summed over the batches accumulated so far
        self.last_step = -1  # the last step kept (flushing empties `steps`, not this)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.last_step = trainer.global_step - 1  # a resumed run's steps so far are logged already

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        # Lightning's outputs["loss"] is divided by accumulate_grad_batches: their sum is the step's mean.
        loss = outputs["loss"].detach()
        self.pending = loss if self.pending is None else self.pending + loss
        step = trainer.global_step - 1  # the step that just ran (global_step counts finished steps)
        if step > self.last_step:
            self.last_step = step
            self.steps.append((step, trainer.current_epoch, trainer.optimizers[0].param_groups[-1]["lr"]))
            self.losses.append(self.pending)
            self.pending = None
            if len(self.steps) >= trainer.log_every_n_steps:
                self.flush(trainer)

    # Also before validation (its metrics are logged after these steps, which some loggers need),
    # at the end of an epoch (before its checkpoint) and of training.
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def flush(self, trainer: L.Trainer) -> None:
        """Read the kept losses in one transfer, stop on a non-finite one, write them to the loggers."""
        if not self.steps:
            return
        losses = torch.stack(self.losses).float().cpu().tolist()
        steps, self.steps, self.losses = self.steps, [], []
        for (step, _, _), loss in zip(steps, losses):
            if not math.isfinite(loss):
                raise TrainingDivergedError(
                    f"train/loss is {loss} at step {step}; the usual causes are an FP16 overflow (use bf16-mixed or "
                    "32-true), too high an LR (lower it or add schedule.warmup_epochs) or bad input data."
                )
        trainer.progress_bar_metrics["train/loss"] = losses[-1]
        for logger in trainer.loggers:
            for (step, epoch, lr), loss in zip(steps, losses):
                logger.log_metrics({"train/loss": loss, "train/lr": lr, "epoch": epoch}, step=step)
            logger.save()
