"""Random erasing (Zhong et al. 2017, arXiv 1708.04896) on a batch that is already on the device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2


def random_erasing(
    x: torch.Tensor,
    p: float,
    *,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float | Sequence[float] = 0.0,
) -> torch.Tensor:
    """Erase one random rectangle in each image of `x` [N, C, H, W] with probability `p`.

    Each image gets its own coin and box, drawn by torchvision's `v2.RandomErasing` from
    torch's global RNG in the order a per-image loop of that transform draws them (so
    `torch.manual_seed` pins it); the boxes are then filled in one masked write on the
    batch's device. `value` fills the box (0 is the mean colour of a normalized batch, as
    in torchvision's training recipe); `scale` is the box's share of the image, `ratio`
    its aspect range. Returns a new tensor.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}.")
    if x.ndim != 4:
        raise ValueError(f"x must be a batch [N, C, H, W], got shape {tuple(x.shape)}.")
    if isinstance(value, str):
        raise ValueError(f"value must be a number or one number per channel, got {value!r}.")
    if p == 0.0:
        return x
    eraser = v2.RandomErasing(p=p, scale=scale, ratio=ratio, value=value)
    boxes = []
    for k in range(x.shape[0]):
        if torch.rand(1) >= p:  # v2's own coin (_RandomApplyTransform.forward), per image
            continue
        box = eraser.make_params([x[k]])
        if box["v"] is not None:  # None: no box fitted in ten tries, and v2 leaves the image
            boxes.append((k, box["i"], box["j"], box["h"], box["w"]))
    if not boxes:
        return x
    index, top, left, height, width = torch.tensor(boxes).to(x.device).unbind(1)
    rows = torch.arange(x.shape[2], device=x.device)
    cols = torch.arange(x.shape[3], device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    inside = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [boxes, 1, H, W]
    fill = torch.tensor(eraser.value, dtype=x.dtype, device=x.device)[:, None, None]
    out = x.clone()
    out[index] = torch.where(inside, fill, x[index])
    return out
