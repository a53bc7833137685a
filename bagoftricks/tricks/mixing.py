"""Batch mixing: mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019).

Every random choice is a parameter (``lam``, ``index``, ``box``, ``generator``), so a test can
pin it. With a ``generator`` every draw comes from it, on its device, and is then moved to the
batch's device (a CPU generator with a GPU batch costs a copy per draw: use a generator on the
batch's device); without one, draws come from the global RNG of the batch's device, which
``seed_everything`` makes reproducible.
Targets are probabilities ``[N, C]`` (already label-smoothed if smoothing is on), so smoothing
is folded in once and mixing only combines distributions.

Nothing here reads a tensor's value on the host unless the caller passes Python numbers: the
draws, the box and the apply/kind decisions stay 0-d tensors on the batch's device, so a GPU
training step never waits for them (no ``.item()``, no ``if`` on a tensor, no validated
``torch.distributions`` object per batch).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Where a draw happens: a generator draws on its own device, the global RNG on the batch's."""
    return generator.device if generator is not None else device


def _check_lam(lam: float | Tensor) -> None:
    # Only a Python number is checked: reading a tensor lam would wait for the device.
    if not isinstance(lam, Tensor) and not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}.")


def sample_lam(
    alpha: float, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """One draw of ``lam ~ Beta(alpha, alpha)`` as a float32 0-d tensor on ``device``.

    ``Beta(a, a)`` is the first coordinate of ``Dirichlet(a, a)``; ``torch._sample_dirichlet`` is
    the sampler ``torch.distributions.Beta`` itself calls, used directly because it takes a
    ``generator`` and skips the distribution's argument validation on every batch.
    Call ``.item()`` on the result for a Python float.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}.")
    concentration = torch.full((2,), float(alpha), device=_draw_device(generator, torch.device(device)))
    return torch._sample_dirichlet(concentration, generator=generator)[0].to(device)


def _permutation(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    return torch.randperm(n, generator=generator, device=_draw_device(generator, device)).to(device)


def _cut_sizes(h: int, w: int, lam: float | Tensor) -> tuple[int, int] | tuple[Tensor, Tensor]:
    """The sides ``int(h * sqrt(1 - lam))``, ``int(w * sqrt(1 - lam))`` of a ``1 - lam`` box (timm's ``rand_bbox``)."""
    if isinstance(lam, Tensor):
        ratio = (1.0 - lam).sqrt()
        return (h * ratio).long(), (w * ratio).long()
    ratio = math.sqrt(1.0 - lam)
    return int(h * ratio), int(w * ratio)


def _rand_corner(
    h: int, w: int, lam: float | Tensor, device: torch.device, generator: torch.Generator | None
) -> tuple[int | Tensor, ...]:
    """timm's ``rand_bbox`` before clipping, as ``(y0, x0, cut_h, cut_w)``: top-left corner and sides.

    The centre is uniform over the pixels (one draw of a flat pixel index); the box spans
    ``[cy - cut_h // 2, cy - cut_h // 2 + cut_h)``, i.e. timm's ``[cy - cut_h // 2, cy + (cut_h + 1) // 2)``,
    and the same across. Kept unclipped: rows outside ``[0, h)`` do not exist in the mask anyway.
    """
    cut_h, cut_w = _cut_sizes(h, w, lam)
    pixel = torch.randint(h * w, (), generator=generator, device=_draw_device(generator, device)).to(device)
    return pixel.div(w, rounding_mode="floor") - cut_h // 2, pixel % w - cut_w // 2, cut_h, cut_w


def rand_box(
    h: int, w: int, lam: float, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """A box ``(y0, y1, x0, x1)`` covering a ``1 - lam`` fraction of an ``h x w`` image, as ints.

    Its centre is uniform over the image and the box is clipped to it (Yun et al. 2019, as in
    their code and timm's ``rand_bbox``), so the real area can be smaller than ``1 - lam``.
    ``cutmix_batch`` draws the same box from the same generator state, but keeps it on the device.
    """
    _check_lam(lam)
    y0, x0, cut_h, cut_w = (int(v) for v in _rand_corner(h, w, lam, torch.device("cpu"), generator))
    return max(y0, 0), min(y0 + cut_h, h), max(x0, 0), min(x0 + cut_w, w)


def _keep_mask(h: int, w: int, corner: tuple[int | Tensor, ...], device: torch.device) -> Tensor:
    """``[H, W]`` bool, False inside the box ``(y0, x0, cut_h, cut_w)``: compared on the device, never read back."""
    y0, x0, cut_h, cut_w = corner
    rows, cols = torch.arange(h, device=device) - y0, torch.arange(w, device=device) - x0
    return ~(((rows >= 0) & (rows < cut_h)).unsqueeze(1) & ((cols >= 0) & (cols < cut_w)))


def _blend(x: Tensor, y_probs: Tensor, keep: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """``x_mixed = keep * x + (1 - keep) * x[index]`` per pixel; targets mixed by ``mean(keep)``.

    ``keep`` is a 0-d weight (mixup's lam, or 1 for an unmixed batch) or an ``[H, W]`` map (cutmix's
    mask), so the label weight is always the share of the pixels that stay: the labels match the
    pixels by construction. ``torch.lerp`` is exact at weights 0 and 1, so pasted and unmixed
    pixels are copies, not sums.
    """
    keep = keep.to(x.dtype)
    x_mixed = torch.lerp(x[index], x, keep)
    lam = keep.float().mean().to(y_probs.dtype)
    return x_mixed, torch.lerp(y_probs[index], y_probs, lam)


def mixup_batch(
    x: Tensor,
    y_probs: Tensor,
    alpha: float,
    lam: float | Tensor | None = None,
    index: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Mixup (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization"; He et al. 2019 sec. 5.4).

    ``x_mixed = lam * x + (1 - lam) * x[index]`` and the same for the targets, with
    ``lam ~ Beta(alpha, alpha)`` and ``index`` a random permutation of the batch unless given.
    ``lam`` may be a Python float in ``[0, 1]`` or a 0-d tensor. The inputs are not modified.
    """
    if lam is None:
        lam = sample_lam(alpha, generator, x.device)
    _check_lam(lam)
    if index is None:
        index = _permutation(x.shape[0], x.device, generator)
    if not isinstance(lam, Tensor):
        lam = torch.full((), float(lam), device=x.device)  # a fill, not a host-to-device copy
    return _blend(x, y_probs, lam, index)


def cutmix_batch(
    x: Tensor,
    y_probs: Tensor,
    alpha: float,
    lam: float | Tensor | None = None,
    index: Tensor | None = None,
    generator: torch.Generator | None = None,
    box: tuple[int, int, int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """CutMix (Yun et al. 2019, "CutMix: Regularization Strategy to Train Strong Classifiers").

    Pastes the box ``rand_box(H, W, lam)`` (or the given ``box``, then ``lam`` is unused) of
    ``x[index]`` into ``x``; the targets are mixed by the pasted area,
    ``lam = 1 - box_area / (H * W)``, recomputed after clipping so the labels match the pixels.
    Draw order: lam, permutation, box centre. The inputs are not modified.
    """
    h, w = x.shape[-2:]
    if box is None and lam is None:
        lam = sample_lam(alpha, generator, x.device)
    if index is None:
        index = _permutation(x.shape[0], x.device, generator)
    if box is None:
        _check_lam(lam)
        corner = _rand_corner(h, w, lam, x.device, generator)
    else:
        y0, y1, x0, x1 = box
        if not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
            raise ValueError(f"box (y0, y1, x0, x1) must lie in the {h}x{w} image with y0 <= y1 and x0 <= x1, got {box}.")
        corner = (y0, x0, y1 - y0, x1 - x0)
    return _blend(x, y_probs, _keep_mask(h, w, corner, x.device), index)


def _check_mixing(mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0, switch_prob: float = 0.5) -> None:
    """Refuse negative alphas and probabilities outside [0, 1]."""
    if mixup_alpha < 0:
        raise ValueError(f"mixup_alpha must be >= 0 (0 turns mixup off), got {mixup_alpha}.")
    if cutmix_alpha < 0:
        raise ValueError(f"cutmix_alpha must be >= 0 (0 turns cutmix off), got {cutmix_alpha}.")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}.")
    if not 0.0 <= switch_prob <= 1.0:
        raise ValueError(f"switch_prob must be in [0, 1], got {switch_prob}.")


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
    ``switch_prob``, else mixup. With both alphas 0 or ``prob == 0`` the inputs are returned as
    they are (the same tensors); a batch that the draw leaves unmixed comes back as equal copies.

    The choices are made on the device, as one per-pixel weight map ``keep`` (mixup: ``lam``;
    cutmix: 0 in the box, 1 elsewhere; not applied: 1) for ``keep * x + (1 - keep) * x[index]``,
    so every batch costs the same few kernels and nothing is read back. Draw order: two uniforms (apply?, cutmix?), the
    permutation, mixup's lam, cutmix's lam, the box centre (only the kinds that are on).
    """
    _check_mixing(mixup_alpha, cutmix_alpha, prob, switch_prob)
    if prob == 0 or (mixup_alpha == 0 and cutmix_alpha == 0):
        return x, y_probs
    h, w = x.shape[-2:]
    apply_u, cutmix_u = torch.rand(2, generator=generator, device=_draw_device(generator, x.device)).to(x.device)
    index = _permutation(x.shape[0], x.device, generator)
    if mixup_alpha > 0:
        keep = sample_lam(mixup_alpha, generator, x.device)
    if cutmix_alpha > 0:
        lam = sample_lam(cutmix_alpha, generator, x.device)
        box_keep = _keep_mask(h, w, _rand_corner(h, w, lam, x.device, generator), x.device)
        keep = torch.where(cutmix_u < switch_prob, box_keep, keep) if mixup_alpha > 0 else box_keep
    if prob < 1:
        keep = torch.where(apply_u < prob, keep, 1.0)
    return _blend(x, y_probs, keep, index)
