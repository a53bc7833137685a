"""Two parameter-free layers that ResNet flags insert: stochastic depth (`drop_path_rate`) and
anti-aliased downsampling (`blur_pool`). Written here because torch and torchvision lack them;
timm has both (`timm.layers.DropPath`, `BlurPool2d`) and the tests compare against it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def drop_path(
    x: torch.Tensor, drop_prob: float, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016, arXiv 1603.09382) on a residual branch's output.

    Each sample's branch is zeroed with probability `drop_prob` and the kept ones are scaled
    by 1 / (1 - drop_prob), so the expectation equals `x` and evaluation (`training=False`)
    is the identity, as timm's `drop_path` with `scale_by_keep=True`.
    """
    if not 0.0 <= drop_prob < 1.0:
        raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}.")
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    # One draw per sample, broadcast over channels and pixels: the whole branch goes.
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = x.new_empty(shape).bernoulli_(keep_prob, generator=generator)
    return x * keep.div_(keep_prob)


class DropPath(nn.Module):
    """`drop_path` as a layer; active only in training mode."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}.")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class BlurPool2d(nn.Module):
    """Blur with the binomial filter [1, 2, 1] x [1, 2, 1] / 16, then subsample (Zhang 2019,
    "Making Convolutional Networks Shift-Invariant Again", arXiv 1904.11486).

    Subsampling without the low-pass filter aliases: a one-pixel shift of the input changes the
    output. Reflect padding as timm's `BlurPool2d`, so inputs need at least 2 pixels per side.
    The filter is a non-persistent buffer: state dicts stay those of the model without the flag.
    """

    def __init__(self, channels: int, stride: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.stride = stride
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :] / 16.0
        self.register_buffer("filt", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.filt, stride=self.stride, groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stride={self.stride}"
