"""Progressive resizing (fast.ai; MosaicML composer's schedule): train on smaller images first.

The batch is downsampled on its device, so the data pipeline and the LR schedule stay as they are:
early steps cost fewer FLOPs, and the last part of training sees full-size images again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def progressive_scale(progress: float, initial_scale: float = 0.5, delay_fraction: float = 0.5, finetune_fraction: float = 0.2) -> float:
    """The side's scale at ``progress`` (0 to 1) of training: ``initial_scale`` for the first
    ``delay_fraction``, then linear up to 1 when ``finetune_fraction`` of training is left, then 1."""
    ramp = 1 - delay_fraction - finetune_fraction
    if progress < delay_fraction:
        done = 0.0
    else:
        done = 1.0 if ramp <= 0 else min((progress - delay_fraction) / ramp, 1.0)
    return initial_scale + (1 - initial_scale) * done


def scaled_side(side: int, scale: float, size_increment: int = 4, smallest: int = 1) -> int:
    """``side * scale`` rounded to a multiple of ``size_increment``, at least ``smallest``, at most ``side``."""
    return min(side, max(smallest, round(side * scale / size_increment) * size_increment))


def resize_batch(x: torch.Tensor, side: int) -> torch.Tensor:
    """The ``(N, C, H, W)`` batch with its longer side ``side`` (bilinear, antialiased); unchanged if not smaller."""
    h, w = x.shape[-2:]
    if side >= max(h, w):
        return x
    size = (round(h * side / max(h, w)), round(w * side / max(h, w)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
