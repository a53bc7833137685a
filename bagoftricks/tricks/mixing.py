"""Batch mixing: mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019).

Every random choice is a parameter (``lam``, ``index``, ``box``, ``generator``), so a test can
pin it. With a ``generator`` every draw (the Beta sample included) comes from it; without one,
the global torch RNG is used, which ``seed_everything`` makes reproducible.
Targets are probabilities ``[N, C]`` (already label-smoothed if smoothing is on), so smoothing
is folded in once and mixing only combines distributions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _uniform(generator: torch.Generator | None) -> float:
    return torch.rand((), generator=generator, device=_gen_device(generator)).item()


def sample_lam(alpha: float, generator: torch.Generator | None = None) -> float:
    """One draw of ``lam ~ Beta(alpha, alpha)``.

    torch's Beta/Gamma samplers take no generator, so with a ``generator`` a seed is drawn from
    it and the Beta sample is taken under a forked (then restored) CPU RNG seeded with it: the
    draw repeats with the generator's seed and the global RNG stream is left untouched.
    """
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    if generator is None:
        return beta.sample().item()
    seed = torch.randint(2**62, (), generator=generator, device=_gen_device(generator)).item()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return beta.sample().item()


def _permutation(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    return torch.randperm(n, generator=generator, device=_gen_device(generator)).to(device)


def mixup_batch(
    x: Tensor,
    y_probs: Tensor,
    alpha: float,
    lam: float | None = None,
    index: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Mixup (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization"; He et al. 2019 sec. 5.4).

    ``x_mixed = lam * x + (1 - lam) * x[index]`` and the same for the targets, with
    ``lam ~ Beta(alpha, alpha)`` and ``index`` a random permutation of the batch unless given.
    The inputs are not modified.
    """
    if lam is None:
        lam = sample_lam(alpha, generator)
    if index is None:
        index = _permutation(x.shape[0], x.device, generator)
    x_mixed = lam * x + (1.0 - lam) * x[index]
    y_mixed = lam * y_probs + (1.0 - lam) * y_probs[index]
    return x_mixed, y_mixed


def rand_box(
    h: int, w: int, lam: float, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """A box ``(y0, y1, x0, x1)`` covering a ``1 - lam`` fraction of an ``h x w`` image.

    Its centre is uniform over the image and the box is clipped to it (Yun et al. 2019, as in
    their code and timm's ``rand_bbox``), so the real area can be smaller than ``1 - lam``.
    """
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut), int(w * cut)
    device = _gen_device(generator)
    cy = torch.randint(h, (), generator=generator, device=device).item()
    cx = torch.randint(w, (), generator=generator, device=device).item()
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    return y0, y1, x0, x1


def cutmix_batch(
    x: Tensor,
    y_probs: Tensor,
    alpha: float,
    lam: float | None = None,
    index: Tensor | None = None,
    generator: torch.Generator | None = None,
    box: tuple[int, int, int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """CutMix (Yun et al. 2019, "CutMix: Regularization Strategy to Train Strong Classifiers").

    Pastes the box ``rand_box(H, W, lam)`` (or the given ``box``) of ``x[index]`` into ``x``; the
    targets are mixed by the pasted area, ``lam = 1 - box_area / (H * W)``, recomputed after
    clipping so the labels match the pixels. The inputs are not modified.
    """
    if lam is None:
        lam = sample_lam(alpha, generator)
    if index is None:
        index = _permutation(x.shape[0], x.device, generator)
    h, w = x.shape[-2:]
    y0, y1, x0, x1 = box if box is not None else rand_box(h, w, lam, generator)
    x_mixed = x.clone()
    x_mixed[..., y0:y1, x0:x1] = x[index, ..., y0:y1, x0:x1]  # gathers only the box, not whole images
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    y_mixed = lam * y_probs + (1.0 - lam) * y_probs[index]
    return x_mixed, y_mixed


def check_mixing(mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0, switch_prob: float = 0.5) -> None:
    """Refuse negative alphas and probabilities outside [0, 1] (a module checks its config with it)."""
    if mixup_alpha < 0:
        raise ValueError(f"model.mixup_alpha must be >= 0 (0 turns mixup off), got {mixup_alpha}.")
    if cutmix_alpha < 0:
        raise ValueError(f"model.cutmix_alpha must be >= 0 (0 turns cutmix off), got {cutmix_alpha}.")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"model.mix_prob must be in [0, 1], got {prob}.")
    if not 0.0 <= switch_prob <= 1.0:
        raise ValueError(f"model.mix_switch_prob must be in [0, 1], got {switch_prob}.")


def mix_batch(
    x: Tensor,
    y_probs: Tensor,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Mix a batch with probability ``prob`` (timm ``Mixup`` semantics, batch mode).

    An alpha of 0 turns that kind off. With both on, cutmix is chosen with probability
    ``switch_prob``, else mixup. An unmixed batch is returned as is (the same tensors).
    Draw order from the RNG: apply?, then (both on) which kind?, then lam, permutation, box.
    """
    check_mixing(mixup_alpha, cutmix_alpha, prob, switch_prob)
    if (mixup_alpha == 0 and cutmix_alpha == 0) or _uniform(generator) >= prob:
        return x, y_probs
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = _uniform(generator) < switch_prob
    else:
        use_cutmix = cutmix_alpha > 0
    if use_cutmix:
        return cutmix_batch(x, y_probs, cutmix_alpha, generator=generator)
    return mixup_batch(x, y_probs, mixup_alpha, generator=generator)
