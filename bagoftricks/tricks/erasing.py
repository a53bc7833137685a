"""Random erasing (Zhong et al. 2017, arXiv 1708.04896) on a batch that is already on the device."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

ATTEMPTS = 10  # boxes tried per image before it is left whole, as torchvision's RandomErasing


def random_erasing(
    x: torch.Tensor,
    p: float,
    *,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float | Sequence[float] = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Erase one random rectangle in each image of `x` [N, C, H, W] with probability `p`.

    The distribution of torchvision's `v2.RandomErasing`, applied to each image: a coin with
    probability `p`, then up to ten tries of a box whose area is a uniform share in `scale` of the
    image and whose aspect ratio is log-uniform in `ratio`, rounded to whole pixels, the first that
    fits inside the image placed uniformly at random (none fits: the image is left whole).
    torchvision draws them in a Python loop with a host read per number; here every image's coin,
    ten tries and position are drawn at once on the batch's device, from `generator` (default:
    torch's global generator of that device, which `seed_everything` seeds), and the boxes are
    filled in one masked write, so nothing is read back or copied from the host. `value` fills the
    box (0 is the mean colour of a normalized batch, as in torchvision's training recipe), or one
    value per channel. Returns a new tensor.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}.")
    if x.ndim != 4:
        raise ValueError(f"x must be a batch [N, C, H, W], got shape {tuple(x.shape)}.")
    if isinstance(value, str):
        raise ValueError(f"value must be a number or one number per channel, got {value!r}.")
    if not (0 <= scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]):
        raise ValueError(f"scale must be (low, high) in [0, 1] and ratio (low, high) > 0, low <= high; got {scale} and {ratio}.")
    values = [float(v) for v in value] if isinstance(value, Sequence) else [float(value)]
    if len(values) not in (1, x.shape[1]):
        raise ValueError(f"value must be one number or one per channel ({x.shape[1]}), got {len(values)}.")
    if p == 0.0:
        return x
    n, _, height, width = x.shape
    draw = dict(device=x.device, generator=generator)
    erase = torch.rand(n, **draw) < p
    area = height * width * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, ATTEMPTS, **draw))
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * torch.rand(n, ATTEMPTS, **draw))
    box_h = torch.sqrt(area * aspect).round()  # half to even, as Python's round in torchvision
    box_w = torch.sqrt(area / aspect).round()
    fits = (box_h < height) & (box_w < width)
    first = fits.float().argmax(1, keepdim=True)  # the first try that fits (0 when none does)
    box_h, box_w = box_h.gather(1, first).squeeze(1), box_w.gather(1, first).squeeze(1)
    erase &= fits.any(1)
    # Uniform integer positions in [0, height - h] and [0, width - w], as torch.randint draws them.
    top = (torch.rand(n, **draw) * (height - box_h + 1)).floor()
    left = (torch.rand(n, **draw) * (width - box_w + 1)).floor()
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
    inside = in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]  # [N, H, W]
    if len(values) == 1:  # a Python number: no tensor from host data, no copy to the device
        return torch.where(inside[:, None], values[0], x)
    fill = torch.stack([torch.full((), v, dtype=x.dtype, device=x.device) for v in values])  # filled on the device
    return torch.where(inside[:, None], fill[:, None, None], x)
