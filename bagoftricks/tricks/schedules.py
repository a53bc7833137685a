"""Learning-rate schedules as closed-form functions of the global step.

A closed form (rather than a stateful scheduler) means a resumed run gets exactly the LR it would
have had, and the callback can set the LR per optimizer step whatever the epoch length.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "step", "cosine", "onecycle")


def _onecycle(step: int, total_steps: int, max_lr: float, pct_start: float, div_factor: float,
              final_div_factor: float) -> float:
    """``torch.optim.lr_scheduler.OneCycleLR`` (cos annealing, two phases) at ``step``.

    Smith & Topin 2017 ("Super-Convergence"). Written out so it is a function of the step, with
    the same phase boundaries as torch: up at step ``pct_start * total_steps - 1``, down at
    ``total_steps - 1``.
    """
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    step = min(step, total_steps - 1)
    up_end = pct_start * total_steps - 1
    if step <= up_end:
        start, end, pct = initial_lr, max_lr, step / up_end if up_end > 0 else 1.0
    else:
        start, end, pct = max_lr, min_lr, (step - up_end) / (total_steps - 1 - up_end)
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def lr_at(
    step: int,
    total_steps: int,
    base_lr: float,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    final_lr: float = 0.0,
    milestones: tuple[int, ...] = (),
    gamma: float = 0.1,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """The LR at a global optimizer ``step`` (0-based) of a run of ``total_steps``.

    Linear warmup (Goyal et al. 2017; He et al. 2019 sec. 3.1): at step ``s < warmup_steps`` the
    LR is ``base_lr * (s + 1) / warmup_steps``, so the first step already learns and the last
    warmup step reaches ``base_lr``. Then, with ``t = step - warmup_steps`` over the remaining
    ``T = total_steps - warmup_steps`` steps:

    - ``constant``: ``base_lr``;
    - ``step``: ``base_lr * gamma ** (number of milestones <= step)``; milestones are global
      steps (torch's ``MultiStepLR``);
    - ``cosine``: ``final_lr + (base_lr - final_lr) * (1 + cos(pi * t / T)) / 2`` (Loshchilov &
      Hutter 2017; He et al. 2019 sec. 5.1); torch's ``CosineAnnealingLR(T_max=T, eta_min=final_lr)``;
    - ``onecycle``: torch's ``OneCycleLR(max_lr=base_lr, total_steps, pct_start, div_factor,
      final_div_factor)``; it has its own warmup, so ``warmup_steps`` must be 0.

    Steps past ``total_steps`` keep the final value.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}.")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    if step < 0 or warmup_steps < 0:
        raise ValueError(f"step and warmup_steps must be >= 0, got step={step}, warmup_steps={warmup_steps}.")
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must not exceed total_steps ({total_steps}).")
    step = min(step, total_steps)

    if schedule == "onecycle":
        if warmup_steps > 0:
            raise ValueError(
                f"warmup_steps must be 0 with schedule='onecycle', which warms up by itself (see pct_start), "
                f"got {warmup_steps}."
            )
        if not 0 < pct_start < 1:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start}.")
        return _onecycle(step, total_steps, base_lr, pct_start, div_factor, final_div_factor)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * gamma ** sum(1 for m in milestones if m <= step)
    t, T = step - warmup_steps, total_steps - warmup_steps  # cosine
    if T == 0:  # all warmup: only reached at step == total_steps, the end value
        return final_lr
    return final_lr + (base_lr - final_lr) * (1 + math.cos(math.pi * t / T)) / 2
