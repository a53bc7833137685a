"""The tricks of He et al. 2019 ("Bag of Tricks for Image Classification with CNNs") as pure torch
functions, usable without Lightning: ``from bagoftricks.tricks import mixup_batch``."""

from bagoftricks.tricks.ema import ModelEma, create_ema, ema_decay_at
from bagoftricks.tricks.erasing import random_erasing
from bagoftricks.tricks.losses import distillation_loss, smooth_targets, soft_target_cross_entropy
from bagoftricks.tricks.mixing import cutmix_batch, mix_batch, mixup_batch, rand_box, sample_lam
from bagoftricks.tricks.optim import param_groups, scaled_lr
from bagoftricks.tricks.resizing import progressive_scale, resize_batch, scaled_side
from bagoftricks.tricks.schedules import SCHEDULES, lr_at

__all__ = [
    "SCHEDULES",
    "ModelEma",
    "create_ema",
    "cutmix_batch",
    "distillation_loss",
    "ema_decay_at",
    "lr_at",
    "mix_batch",
    "mixup_batch",
    "param_groups",
    "progressive_scale",
    "rand_box",
    "random_erasing",
    "resize_batch",
    "sample_lam",
    "scaled_lr",
    "scaled_side",
    "smooth_targets",
    "soft_target_cross_entropy",
]
