"""Model EMA: an exponential moving average of the weights and BN statistics, kept beside the model.

Built on torch's `AveragedModel`, with timm's warmup of the decay (`ModelEmaV3`) as its averaging
function. Lightning's `WeightAveraging` callback is not used: it swaps the average into the
module for validation and copies it over the weights at the end of fit, so raw and EMA metrics
cannot both be logged and the raw weights are lost; here the module evaluates both.
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


def ema_multi_avg_fn(decay: float, warmup_power: float | None = 0.75):
    """`AveragedModel`'s `multi_avg_fn`: ema <- decay_t * ema + (1 - decay_t) * model on every
    float tensor; integer buffers (BN's batch counters) are copied, as timm does."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}.")
    if warmup_power is not None and warmup_power <= 0:
        raise ValueError(f"warmup_power must be > 0 or None, got {warmup_power}.")

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], model_params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not ema_params[0].is_floating_point():
            torch._foreach_copy_(ema_params, model_params)
            return
        weight = 1 - ema_decay_at(num_averaged, decay, warmup_power)
        torch._foreach_lerp_(ema_params, model_params, weight.to(ema_params[0].dtype))

    return update


def create_ema(model: nn.Module, decay: float, warmup_power: float | None = 0.75) -> AveragedModel:
    """An EMA copy of `model` (parameters and buffers); call `.update_parameters(model)` after
    optimizer steps. Its first update copies the model, as timm's first step does."""
    ema = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(decay, warmup_power), use_buffers=True)
    return ema.requires_grad_(False)  # never trained: no optimizer or DDP should see it as a parameter
