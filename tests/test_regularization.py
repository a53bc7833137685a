"""Random erasing and model EMA against torchvision's transform and torch's AveragedModel / timm's EMA."""

from __future__ import annotations

import pytest
import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.transforms import v2

from bagoftricks.tricks import create_ema, ema_decay_at, random_erasing
from host_reads import HostReads


def boxes_of(erased: torch.Tensor) -> torch.Tensor:
    """[N, 5]: erased (0/1), height, width, top, left of the box of each image (0s when none)."""
    out = []
    for changed in erased:
        if not changed.any():
            out.append([0, 0, 0, 0, 0])
            continue
        rows, cols = changed.nonzero().unbind(1)
        out.append([1, rows.max() - rows.min() + 1, cols.max() - cols.min() + 1, rows.min(), cols.min()])
    return torch.tensor(out, dtype=torch.float64)


def total_variation(a: torch.Tensor, b: torch.Tensor, size: int) -> float:
    """Half the L1 distance between the empirical distributions of two samples of 0..size-1."""
    return 0.5 * (torch.bincount(a.long(), minlength=size) / len(a) - torch.bincount(b.long(), minlength=size) / len(b)).abs().sum().item()


@pytest.mark.parametrize(("shape", "scale", "p"), [((24, 20), (0.02, 0.33), 0.5), ((6, 5), (0.6, 0.95), 1.0)])
def test_random_erasing_has_torchvisions_distribution(shape, scale, p):
    """The coin, box size, aspect and position of a loop of v2.RandomErasing over the images, in
    distribution: 4,000 images each (on 6 x 5 with big boxes, many tries fit nowhere)."""
    n = 4000
    images = torch.ones(n, 1, *shape)
    eraser = v2.RandomErasing(p=p, scale=scale, value=0.0)
    torch.manual_seed(0)
    theirs = boxes_of(torch.stack([eraser(image) for image in images])[:, 0] == 0)
    ours = boxes_of(random_erasing(images, p, scale=scale, generator=torch.Generator().manual_seed(1))[:, 0] == 0)
    for column, name in enumerate(("erased", "height", "width", "top", "left")):
        spread = (theirs[:, column].var() / n + ours[:, column].var() / n).sqrt()
        assert abs(ours[:, column].mean() - theirs[:, column].mean()) <= 4 * spread + 1e-9, name
        if column:
            assert total_variation(ours[:, column], theirs[:, column], max(shape) + 1) < 0.05, name
    assert 0.2 < ours[:, 0].mean() < 0.9  # some images erased, some not: the test can see both


def test_random_erasing_is_reproducible_per_seed():
    x = torch.randn(64, 3, 24, 20)
    first, again, other = (random_erasing(x, 0.5, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert torch.equal(first, again) and not torch.equal(first, other)
    torch.manual_seed(3)  # no generator: torch's global one, which seed_everything seeds
    seeded = random_erasing(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(seeded, random_erasing(x, 0.5))
    erased = (first != x).flatten(1).any(1)
    assert 16 < erased.sum() < 48  # about half the images, each its own box
    assert out_of_place(x, first)


def out_of_place(x: torch.Tensor, out: torch.Tensor) -> bool:
    return out is not x and not torch.equal(x, out)


def test_random_erasing_reads_nothing_back():
    x = torch.randn(16, 3, 16, 16)
    with HostReads() as reads:
        random_erasing(x, 0.5, value=(0.1, 0.2, 0.3))
        random_erasing(x, 0.5)
    assert reads.ops == []


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
    [(dict(p=1.5), r"p must be in \[0, 1\], got 1.5"), (dict(p=0.5, value="random"), "value must be a number"),
     (dict(p=0.5, value=(1.0, 2.0)), r"one per channel \(3\), got 2"), (dict(p=0.5, scale=(0.5, 0.1)), "scale must be")],  # fmt: skip
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


def test_ema_update_reads_nothing_back_and_counts_on_the_device():
    """No branch on the count, no host read of the decay: the whole update stays on the device."""
    model = small_net()
    ema = create_ema(model, 0.9)
    steps = train_steps(model, 3)
    with HostReads() as reads:
        for current in steps:
            ema.update_parameters(current)
    assert reads.ops == []
    assert ema.n_averaged.dtype == torch.long and ema.n_averaged.item() == 3
    assert torch.equal(ema.module[1].num_batches_tracked, model[1].num_batches_tracked)  # integers copied


def test_ema_first_update_copies_the_model_without_warmup():
    """With a constant decay, torch's and timm's first update is a copy, not 0.9 * init + 0.1 * model."""
    torch.manual_seed(0)
    model = small_net()
    ema = create_ema(model, 0.9, warmup_power=None)
    next(train_steps(model, 1))
    ema.update_parameters(model)
    assert_same_state(ema.module, model.state_dict())
