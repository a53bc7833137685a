"""Model EMA: an exponential moving average of the weights and BN statistics, kept beside the model.

An `AveragedModel` (so its state dict, `module.*` and `n_averaged`, and torch's `update_bn` stay
those of torch's class), whose update is timm's `ModelEmaV3` written without a host read:
torch's own `update_parameters` branches on its device counter (`n_averaged == 0`) twice a step,
and a lerp with a tensor weight reads that weight back; here the count stays on the device and
each update is one foreach pass. Lightning's `WeightAveraging` callback is not used: it swaps the
average into the module for validation and copies it over the weights at the end of fit, so raw
and EMA metrics cannot both be logged and the raw weights are lost; here the module evaluates both.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_decay_at(updates: torch.Tensor, decay: float, warmup_power: float | None = 0.75) -> torch.Tensor:
    """The decay of the update after `updates` earlier ones: timm's warmup
    min(decay, 1 - (1 + updates) ** -warmup_power), or `decay` throughout with `warmup_power=None`.

    Early on the average forgets fast, so it is not dragged by random initial weights; power 3/4
    reaches 0.999 after 10k updates (timm's advice for shorter trainings, 2/3 for longer ones).
    A tensor in, a tensor out, so the schedule never reads a count back from the device.
    """
    if warmup_power is None:
        return torch.full_like(updates, decay, dtype=torch.float32)
    return (1 - (1 + updates.float()) ** -warmup_power).clamp(max=decay)


class ModelEma(AveragedModel):
    """An EMA copy of a model (parameters and buffers): ema <- decay_t * ema + (1 - decay_t) * model
    on every float tensor, with decay_t from `ema_decay_at`; integer buffers (BN's batch counters)
    are copied, as timm does. The first update copies the model, as torch's and timm's do.

    `update_parameters(model)` runs on the device without reading anything back: the count
    `n_averaged` is a device tensor, the first-update copy is a weight of 1 chosen on the device
    (`torch.where`), and the update is one foreach lerp whose weight is a list of 0-dim device
    tensors (given a single tensor, the foreach lerp reads it back as a host number).
    """

    def __init__(self, model: nn.Module, decay: float, warmup_power: float | None = 0.75) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}.")
        if warmup_power is not None and warmup_power <= 0:
            raise ValueError(f"warmup_power must be > 0 or None, got {warmup_power}.")
        super().__init__(model, use_buffers=True)
        self.decay, self.warmup_power = decay, warmup_power
        self.requires_grad_(False)  # never trained: no optimizer or DDP should see it as a parameter

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        ema_float, model_float, ema_int, model_int = [], [], [], []
        for ours, theirs in zip(
            [*self.module.parameters(), *self.module.buffers()], [*model.parameters(), *model.buffers()], strict=True
        ):
            if ours.is_floating_point():
                ema_float.append(ours)
                model_float.append(theirs.detach())
            else:
                ema_int.append(ours)
                model_int.append(theirs)
        weight = torch.where(self.n_averaged == 0, 1.0, 1 - ema_decay_at(self.n_averaged, self.decay, self.warmup_power))
        weights = {t.dtype: weight.to(t.dtype) for t in ema_float}  # lerp wants its weight in the tensor's dtype
        torch._foreach_lerp_(ema_float, model_float, [weights[t.dtype] for t in ema_float])
        if ema_int:
            torch._foreach_copy_(ema_int, model_int)
        self.n_averaged += 1


def create_ema(model: nn.Module, decay: float, warmup_power: float | None = 0.75) -> ModelEma:
    """An EMA copy of `model` (parameters and buffers); call `.update_parameters(model)` after
    optimizer steps. Its first update copies the model, as timm's first step does."""
    return ModelEma(model, decay, warmup_power)
