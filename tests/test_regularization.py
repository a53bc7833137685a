"""Random erasing and model EMA against torchvision's transform and torch's AveragedModel / timm's EMA."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from bagoftricks.tricks import random_erasing


def test_random_erasing_matches_torchvision_per_image():
    """Same coins and boxes as a loop of v2.RandomErasing over the images, for the same seed."""
    x = torch.randn(64, 3, 24, 20)
    eraser = v2.RandomErasing(p=0.5, value=0.0)
    torch.manual_seed(0)
    expected = torch.stack([eraser(image) for image in x])
    torch.manual_seed(0)
    out = random_erasing(x, 0.5)
    torch.testing.assert_close(out, expected)
    erased = (out != x).flatten(1).any(1)
    assert 16 < erased.sum() < 48  # about half the images, each its own box
    assert not torch.equal(x, out) and out is not x


def test_random_erasing_fills_one_box_per_image_with_value():
    x = torch.randn(32, 3, 16, 16)
    torch.manual_seed(1)
    out = random_erasing(x, 1.0, value=(1.0, 2.0, 3.0), scale=(0.1, 0.2))
    for image, before in zip(out, x):
        changed = (image != before).any(0)
        rows, cols = changed.nonzero().unbind(1)
        box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # one filled rectangle
        assert 0.05 <= box.numel() / changed.numel() <= 0.25
        assert image[:, changed].tolist() == [[1.0] * box.numel(), [2.0] * box.numel(), [3.0] * box.numel()]


def test_random_erasing_off():
    x = torch.randn(4, 3, 8, 8)
    assert random_erasing(x, 0.0) is x


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(p=1.5), r"p must be in \[0, 1\], got 1.5"), (dict(p=0.5, value="random"), "value must be a number")],
)
def test_random_erasing_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        random_erasing(torch.zeros(2, 3, 8, 8), **kwargs)
