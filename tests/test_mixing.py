"""Unit tests of ``bagoftricks.tricks.mixing`` (mixup, cutmix, mix_batch) against the formulas, timm's
``rand_bbox`` and the Beta distribution; and that mixing reads nothing back from the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from host_reads import HostReads
from scipy import stats

from bagoftricks.tricks import cutmix_batch, mix_batch, mixup_batch, rand_box, sample_lam, smooth_targets

C = 7


def _images(n=6, h=12, w=10):
    # distinct values everywhere, so every pasted pixel differs from the one it replaces
    x = torch.arange(n * 3 * h * w, dtype=torch.float32).reshape(n, 3, h, w)
    y = smooth_targets(torch.arange(n) % C, C, 0.1)
    return x, y


def test_mixup_formula_and_inputs_unchanged():
    x, y = _images()
    x0, y0 = x.clone(), y.clone()
    index = torch.tensor([3, 0, 5, 1, 2, 4])
    for lam in (0.7, torch.tensor(0.7)):  # a Python float or a tensor on the batch's device
        xm, ym = mixup_batch(x, y, alpha=0.2, lam=lam, index=index)
        torch.testing.assert_close(xm, 0.7 * x + 0.3 * x[index])
        torch.testing.assert_close(ym, 0.7 * y + 0.3 * y[index])
        torch.testing.assert_close(ym.sum(1), torch.ones(6))
    assert torch.equal(x, x0) and torch.equal(y, y0)
    # lam = 1 and 0 give exact copies (lerp is exact at its ends)
    assert torch.equal(mixup_batch(x, y, 0.2, lam=1.0, index=index)[0], x)
    assert torch.equal(mixup_batch(x, y, 0.2, lam=0.0, index=index)[0], x[index])


@pytest.mark.parametrize("call", [
    lambda x, y: mixup_batch(x, y, 0.2, lam=2.0),  # would give negative target probabilities
    lambda x, y: mixup_batch(x, y, 0.2, lam=-0.1),
    lambda x, y: cutmix_batch(x, y, 1.0, lam=1.5),
    lambda x, y: rand_box(8, 8, 1.5),
])
def test_lam_out_of_range_is_refused(call):
    with pytest.raises(ValueError, match=r"^lam must be in \[0, 1\], got"):
        call(*_images())


@pytest.mark.parametrize("box", [(2, 1, 0, 4), (0, 4, -1, 3), (0, 13, 0, 4), (0, 4, 0, 11)])
def test_box_outside_the_image_is_refused(box):
    with pytest.raises(ValueError, match=r"^box \(y0, y1, x0, x1\) must lie in the 12x10 image"):
        cutmix_batch(*_images(), 1.0, box=box)


def test_cutmix_pastes_box_and_mixes_by_area():
    x, y = _images()
    x0, y0 = x.clone(), y.clone()
    index = torch.tensor([3, 0, 5, 1, 2, 4])
    lam = 0.6
    box = rand_box(12, 10, lam, torch.Generator().manual_seed(5))
    xm, ym = cutmix_batch(x, y, alpha=1.0, lam=lam, index=index, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x, x0) and torch.equal(y, y0)
    y_lo, y_hi, x_lo, x_hi = box
    inside = torch.zeros(12, 10, dtype=torch.bool)
    inside[y_lo:y_hi, x_lo:x_hi] = True
    assert inside.any()
    changed = (xm != x).any(dim=1)  # [N, H, W]
    assert torch.equal(changed, inside.expand_as(changed))
    assert torch.equal(xm[..., inside], x[index][..., inside])
    assert torch.equal(xm[..., ~inside], x[..., ~inside])
    lam_pixels = 1 - (y_hi - y_lo) * (x_hi - x_lo) / (12 * 10)
    torch.testing.assert_close(ym, lam_pixels * y + (1 - lam_pixels) * y[index])
    # an explicit box is used as given
    xb, yb = cutmix_batch(x, y, 1.0, lam=0.5, index=index, box=(0, 6, 0, 10))
    assert torch.equal(xb[:, :, :6], x[index][:, :, :6]) and torch.equal(xb[:, :, 6:], x[:, :, 6:])
    torch.testing.assert_close(yb, 0.5 * y + 0.5 * y[index])


def test_rand_box_is_timms_rand_bbox(monkeypatch):
    """The box of timm's ``rand_bbox`` around the same centre, for many sizes and lams."""
    from timm.data import mixup as timm_mixup

    for seed in range(300):
        h, w = 5 + seed % 13, 4 + seed % 11
        lam = float(torch.rand((), generator=torch.Generator().manual_seed(10_000 + seed)))
        # rand_box draws the centre as one flat pixel index; timm draws cy, then cx
        pixel = int(torch.randint(h * w, (), generator=torch.Generator().manual_seed(seed)))
        centre = iter(divmod(pixel, w))
        monkeypatch.setattr(timm_mixup.np.random, "randint", lambda low, high, size=None: next(centre))
        expected = tuple(int(v) for v in timm_mixup.rand_bbox((h, w), lam))
        assert rand_box(h, w, lam, torch.Generator().manual_seed(seed)) == expected, (h, w, lam, pixel)


def test_cutmix_device_box_is_rand_box():
    """The box cutmix builds on the device (tensor lam, no read) is the box ``rand_box`` returns."""
    x, y = _images(n=4, h=16, w=13)
    index = torch.tensor([1, 2, 3, 0])
    for seed in range(60):
        g = torch.Generator().manual_seed(seed)
        lam = sample_lam(1.0, g)  # cutmix_batch draws lam, then (no index given here) the centre
        y0, y1, x0, x1 = rand_box(16, 13, lam.item(), g)
        xm, _ = cutmix_batch(x, y, 1.0, index=index, generator=torch.Generator().manual_seed(seed))
        inside = torch.zeros(16, 13, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal((xm != x).any(dim=1), inside.expand(4, -1, -1)), seed


def test_rand_box_area_and_clipping():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        y0, y1, x0, x1 = rand_box(32, 32, 0.75, g)
        assert 0 <= y0 <= y1 <= 32 and 0 <= x0 <= x1 <= 32
        assert (y1 - y0) * (x1 - x0) <= 16 * 16  # a 1 - lam = 1/4 box, clipped only smaller
    y0, y1, x0, x1 = rand_box(32, 32, 1.0, g)
    assert y0 == y1 and x0 == x1  # lam = 1: empty box


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_sample_lam_is_beta_and_reproducible(alpha):
    g = torch.Generator().manual_seed(0)
    lams = torch.stack([sample_lam(alpha, g) for _ in range(3000)])
    assert lams.shape == (3000,) and lams.dtype == torch.float32
    assert ((lams >= 0) & (lams <= 1)).all()
    assert stats.kstest(lams.double().numpy(), stats.beta(alpha, alpha).cdf).pvalue > 0.01
    assert abs(lams.mean().item() - 0.5) < 0.03  # Beta(a, a) has mean 1/2
    assert abs(lams.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.015  # and variance 1/(4(2a+1))
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(lams[:50], torch.stack([sample_lam(alpha, g2) for _ in range(50)]))
    # a seeded generator leaves the global RNG stream alone
    torch.manual_seed(1)
    a = torch.rand(3)
    torch.manual_seed(1)
    sample_lam(alpha, torch.Generator().manual_seed(3))
    assert torch.equal(a, torch.rand(3))
    # without a generator, the global seed makes it repeat
    torch.manual_seed(2)
    first = sample_lam(alpha)
    torch.manual_seed(2)
    assert sample_lam(alpha) == first
    with pytest.raises(ValueError, match=r"^alpha must be > 0, got 0"):
        sample_lam(0)


def test_mix_batch_seeded_runs_repeat():
    x, y = _images()
    xa, ya = mix_batch(x, y, 0.2, 1.0, generator=torch.Generator().manual_seed(4))
    xb, yb = mix_batch(x, y, 0.2, 1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    torch.manual_seed(4)  # the global RNG, as seed_everything sets it
    xa, ya = mix_batch(x, y, 0.2, 1.0, prob=0.5)
    torch.manual_seed(4)
    xb, yb = mix_batch(x, y, 0.2, 1.0, prob=0.5)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_mix_batch_off_and_prob_zero_return_inputs():
    x, y = _images()
    g = torch.Generator().manual_seed(0)
    for kwargs in (dict(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.0), dict()):
        xm, ym = mix_batch(x, y, generator=g, **kwargs)
        assert xm is x and ym is y


def _mix_many(calls, **kwargs):
    """Runs ``mix_batch`` on 8 constant images with one-hot labels; per call: the kind, and the label weight.

    Image ``i`` is filled with ``i + 1``, so ``xm == x`` marks the pixels kept; the label weight of
    the own class is ``ym[i, i]``, which must equal that kept share for every kind.
    """
    n = 8
    x = (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1).expand(n, 1, 16, 16).contiguous()
    y = torch.eye(n)
    torch.manual_seed(0)
    kinds, weights = [], []
    for _ in range(calls):
        xm, ym = mix_batch(x, y, **kwargs)
        if torch.equal(xm, x):
            kind = "none"
        elif torch.isin(xm, x).all():  # cutmix only moves pixels, mixup blends them
            kind = "cutmix"
            kept = (xm == x).float().mean(dim=(1, 2, 3))
            torch.testing.assert_close(ym.diagonal(), kept)  # the labels match the pixels
        else:
            kind = "mixup"
        kinds.append(kind)
        weights.append(ym.diagonal().min().item())  # the own-class weight, 1 only where index[i] == i
        torch.testing.assert_close(ym.sum(1), torch.ones(n))
    return kinds, np.array(weights)


def test_mix_batch_kinds_and_lam_distributions():
    """Apply frequency ~ prob, kind ~ switch_prob, mixup's lam ~ Beta, cutmix's area ~ timm's."""
    from timm.data.mixup import rand_bbox

    calls = 2000
    kinds, weights = _mix_many(calls, mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.8, switch_prob=0.3)
    kinds = np.array(kinds)
    # binomial counts within 4.5 standard deviations (fixed seed: a failure is a real change)
    for kind, p in {"none": 0.2, "cutmix": 0.8 * 0.3, "mixup": 0.8 * 0.7}.items():
        count = (kinds == kind).sum()
        assert abs(count - calls * p) < 4.5 * np.sqrt(calls * p * (1 - p)), (kind, count)
    assert stats.kstest(weights[kinds == "mixup"], stats.beta(0.4, 0.4).cdf).pvalue > 0.01
    # cutmix's label weight: 1 - clipped area / (H W) of timm's box with lam ~ Beta(1, 1)
    rng = np.random.default_rng(0)
    reference = []
    np.random.seed(0)
    for lam in rng.beta(1.0, 1.0, size=4000):
        y0, y1, x0, x1 = rand_bbox((16, 16), lam)
        reference.append(1 - (y1 - y0) * (x1 - x0) / 256)
    assert stats.ks_2samp(weights[kinds == "cutmix"], reference).pvalue > 0.01


@pytest.mark.parametrize("kwargs, kind", [(dict(mixup_alpha=1.0), "mixup"), (dict(cutmix_alpha=1.0), "cutmix")])
def test_mix_batch_one_alpha_gives_only_that_kind(kwargs, kind):
    kinds, _ = _mix_many(50, prob=0.6, **kwargs)
    assert set(kinds) == {kind, "none"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mixup_alpha=-1.0), r"^mixup_alpha must be >= 0"),
        (dict(cutmix_alpha=-0.5), r"^cutmix_alpha must be >= 0"),
        (dict(mixup_alpha=0.2, prob=1.5), r"^prob must be in \[0, 1\]"),
        (dict(mixup_alpha=0.2, switch_prob=-0.1), r"^switch_prob must be in \[0, 1\]"),
    ],
)
def test_mix_batch_refuses_bad_arguments(kwargs, message):
    x, y = _images()
    with pytest.raises(ValueError, match=message):
        mix_batch(x, y, **kwargs)


# ---------------------------------------------------------------- host reads (issue 17)


MIX_CASES = {
    "mixup": dict(mixup_alpha=0.2),
    "cutmix": dict(cutmix_alpha=1.0),
    "both": dict(mixup_alpha=0.2, cutmix_alpha=1.0),
    "both, prob < 1": dict(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5, switch_prob=0.3),
}


@pytest.mark.parametrize("seeded", [False, True], ids=["global RNG", "generator"])
@pytest.mark.parametrize("kwargs", MIX_CASES.values(), ids=MIX_CASES.keys())
def test_mixing_reads_nothing_on_the_host(kwargs, seeded):
    x, y = _images()
    generator = torch.Generator().manual_seed(0) if seeded else None
    with HostReads() as reads:
        for _ in range(5):  # draws that apply and draws that do not
            mix_batch(x, y, generator=generator, **kwargs)
        mixup_batch(x, y, 0.2, generator=generator)
        cutmix_batch(x, y, 1.0, generator=generator)
    assert reads.ops == []
