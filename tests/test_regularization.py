"""Random erasing and model EMA against torchvision's transform and torch's AveragedModel / timm's EMA."""

from __future__ import annotations

import pytest
import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.transforms import v2

from bagoftricks.tricks import create_ema, ema_decay_at, random_erasing


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


def small_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def train_steps(model, n):
    """Move the weights (a fake optimizer step) and BN's statistics (a training forward), n times."""
    for _ in range(n):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        model.train()(torch.randn(5, 3, 8, 8))
        yield model


def assert_same_state(ours, reference):
    state = ours.state_dict()
    assert state.keys() == reference.keys()
    for key, value in state.items():
        torch.testing.assert_close(value, reference[key], msg=key)


def test_ema_equals_averaged_model_with_ema_function():
    """Without warmup: torch's own EMA averaging of parameters and BN statistics. BN's batch
    counter is copied (timm's rule), where torch's function would truncate an average of it."""
    torch.manual_seed(0)
    model = small_net()
    ours = create_ema(model, 0.9, warmup_power=None)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for step in train_steps(model, 6):
        ours.update_parameters(step)
        theirs.update_parameters(step)
    averaged = {k: v for k, v in theirs.module.state_dict().items() if v.is_floating_point()}
    assert_same_state(ours.module, averaged | {"1.num_batches_tracked": model[1].num_batches_tracked})
    assert not torch.allclose(ours.module[0].weight, model[0].weight)  # an average, not a copy
    assert not any(p.requires_grad for p in ours.parameters())


def test_ema_warmup_equals_timm_model_ema_v3():
    """timm's decay warmup: timm counts the first update as step 1."""
    torch.manual_seed(0)
    model = small_net()
    ours = create_ema(model, 0.95, warmup_power=0.75)
    theirs = ModelEmaV3(model, decay=0.95, use_warmup=True, warmup_power=0.75, foreach=False)
    for step, current in enumerate(train_steps(model, 8), start=1):
        ours.update_parameters(current)
        theirs.update(current, step=step)
    assert_same_state(ours.module, theirs.module.state_dict())


def test_ema_decay_at_formula():
    updates = torch.tensor([0, 1, 9, 10_000])
    expected = torch.tensor([0.0, 1 - 2**-0.75, 1 - 10**-0.75, 0.999])
    torch.testing.assert_close(ema_decay_at(updates, 0.999), expected)
    torch.testing.assert_close(ema_decay_at(updates, 0.999, None), torch.full((4,), 0.999))


def test_ema_bad_decay():
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\], got 1.5"):
        create_ema(small_net(), 1.5)
