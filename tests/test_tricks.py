"""Unit tests of ``bagoftricks.tricks`` against torch/timm references and the papers' formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from host_reads import HostReads
from scipy import stats
from torch import nn

from bagoftricks.tricks import (
    SCHEDULES,
    cutmix_batch,
    distillation_loss,
    lr_at,
    mix_batch,
    mixup_batch,
    param_groups,
    rand_box,
    sample_lam,
    scaled_lr,
    smooth_targets,
    soft_target_cross_entropy,
)

C = 7


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, C, generator=g) * 3
    y = torch.randint(C, (16,), generator=g)
    return logits, y


# ---------------------------------------------------------------- losses


def test_smooth_targets_rows():
    probs = smooth_targets(torch.tensor([0, 3]), 4, 0.2)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    torch.testing.assert_close(probs[0], torch.tensor([0.85, 0.05, 0.05, 0.05]))
    torch.testing.assert_close(smooth_targets(torch.tensor([1]), 3, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))
    y = torch.randint(C, (50,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(smooth_targets(y, C, 0.3), F.one_hot(y, C) * 0.7 + 0.3 / C)  # the textbook form
    assert torch.equal(smooth_targets(y.int(), C, 0.3), smooth_targets(y, C, 0.3))  # any integer dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_smooth_targets_refuses_non_integer_labels(dtype):
    with pytest.raises(ValueError, match=r"target must hold integer class ids, got dtype torch\.\w+; convert"):
        smooth_targets(torch.tensor([1.7, 0.2]).to(dtype), 3, 0.1)  # truncating 1.7 to class 1 would be silent


def test_smooth_targets_refuses_ids_out_of_range():
    for bad in (3, -1):
        with pytest.raises(RuntimeError, match="out of bounds"):
            smooth_targets(torch.tensor([0, bad]), 3, 0.1)


def test_label_smoothing_matches_torch_and_timm(batch):
    from timm.loss import LabelSmoothingCrossEntropy

    logits, y = batch
    loss = soft_target_cross_entropy(logits, smooth_targets(y, C, 0.1))
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, label_smoothing=0.1))
    torch.testing.assert_close(loss, LabelSmoothingCrossEntropy(0.1)(logits, y))
    # and without smoothing, plain cross-entropy
    torch.testing.assert_close(soft_target_cross_entropy(logits, F.one_hot(y, C).float()), F.cross_entropy(logits, y))


def test_soft_ce_float32_under_autocast(batch):
    logits, y = batch
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = soft_target_cross_entropy(logits.bfloat16(), smooth_targets(y, C, 0.1))
    assert loss.dtype == torch.float32
    ref = F.cross_entropy(logits.bfloat16().float(), y, label_smoothing=0.1)
    torch.testing.assert_close(loss, ref)


@pytest.mark.parametrize("s", [-0.1, 1.0])
def test_smoothing_out_of_range(s):
    with pytest.raises(ValueError, match=r"^smoothing must be in \[0, 1\), got"):
        smooth_targets(torch.tensor([0]), 3, s)


def _distill_by_hand(student, teacher, target, T, alpha):
    p_t = torch.softmax(teacher / T, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(student / T, -1))).sum(-1).mean()
    if target.ndim == 2:
        ce = (-target * torch.log_softmax(student, -1)).sum(-1).mean()
    else:
        ce = F.cross_entropy(student, target)
    return alpha * ce + (1 - alpha) * T**2 * kl


@pytest.mark.parametrize("soft", [False, True])
def test_distillation_matches_hand_formula(batch, soft):
    student, y = batch
    teacher = torch.randn(16, C, generator=torch.Generator().manual_seed(1)) * 2
    target = smooth_targets(y, C, 0.1) if soft else y
    loss = distillation_loss(student, teacher, target, temperature=4.0, alpha=0.3)
    torch.testing.assert_close(loss, _distill_by_hand(student, teacher, target, 4.0, 0.3))
    # the KL term against torch's own kl_div (batchmean), with the Hinton T^2
    kl = F.kl_div(torch.log_softmax(student / 4, -1), torch.softmax(teacher / 4, -1), reduction="batchmean")
    torch.testing.assert_close(distillation_loss(student, teacher, target, 4.0, 0.0), 16 * kl)


def test_distillation_alpha_one_is_ce_and_teacher_gets_no_grad(batch):
    logits, y = batch
    student = logits.clone().requires_grad_()
    teacher = torch.randn(16, C, requires_grad=True)
    torch.testing.assert_close(distillation_loss(student, teacher, y, 2.0, 1.0), F.cross_entropy(logits, y))
    distillation_loss(student, teacher, y, 2.0, 0.5).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(temperature=0.0, alpha=0.5), r"^temperature must be > 0, got 0\.0\.$"),
        (dict(temperature=1.0, alpha=1.5), r"^alpha must be in \[0, 1\], got 1\.5\.$"),
        (dict(temperature=1.0, alpha=-0.1), r"^alpha must be in \[0, 1\], got -0\.1\.$"),
    ],
)
def test_distillation_validates(batch, kwargs, key):
    logits, y = batch
    with pytest.raises(ValueError, match=key):
        distillation_loss(logits, logits, y, **kwargs)


# ---------------------------------------------------------------- mixing


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


def test_host_reads_counter_sees_reads():
    """The counter itself: the reads the tricks used to make are seen."""
    for read in (
        lambda: torch.ones(()).item(),
        lambda: bool(torch.ones(()) > 0),
        lambda: F.one_hot(torch.tensor([1, 2]), 3),  # its range check reads min and max
        lambda: torch.distributions.Beta(torch.tensor(0.2), torch.tensor(0.2)).sample(),  # validation
    ):
        with HostReads() as reads:
            read()
        assert reads.ops, read


MIX_CASES = {
    "mixup": dict(mixup_alpha=0.2),
    "cutmix": dict(cutmix_alpha=1.0),
    "both": dict(mixup_alpha=0.2, cutmix_alpha=1.0),
    "both, prob < 1": dict(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5, switch_prob=0.3),
}


@pytest.mark.parametrize("seeded", [False, True], ids=["global RNG", "generator"])
@pytest.mark.parametrize("kwargs", MIX_CASES.values(), ids=MIX_CASES.keys())
def test_mix_batch_reads_nothing_on_the_host(kwargs, seeded):
    x, y = _images()
    generator = torch.Generator().manual_seed(0) if seeded else None
    with HostReads() as reads:
        for _ in range(5):  # draws that apply and draws that do not
            mix_batch(x, y, generator=generator, **kwargs)
    assert reads.ops == []


def test_losses_and_mixing_read_nothing_on_the_host(batch):
    logits, y = batch
    x, probs = _images(n=16)
    teacher = logits.flip(0)
    with HostReads() as reads:
        target = smooth_targets(y, C, 0.1)
        soft_target_cross_entropy(logits, target)
        distillation_loss(logits, teacher, y, 4.0, 0.3)
        distillation_loss(logits, teacher, target, 4.0, 0.3)
        mixup_batch(x, probs, 0.2)
        cutmix_batch(x, probs, 1.0)
    assert reads.ops == []


# ---------------------------------------------------------------- optim


class ToyResNet(nn.Module):
    """The torchvision ResNet child names: conv1, bn1, (relu, pool), layer1..2, fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.layer2 = nn.Sequential(nn.Conv2d(4, 8, 3, bias=False), nn.BatchNorm2d(8))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)


def _group_of(groups):
    return {id(p): g for g in groups for p in g["params"]}


@pytest.mark.parametrize("no_bias_decay", [True, False])
def test_param_groups_decay(no_bias_decay):
    model = ToyResNet()
    groups = param_groups(model, 5e-4, no_bias_decay=no_bias_decay)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    where = _group_of(groups)
    for name, p in model.named_parameters():
        expected = 5e-4 if (p.ndim > 1 or not no_bias_decay) else 0.0
        assert where[id(p)]["weight_decay"] == expected, name
        assert where[id(p)]["lr_scale"] == 1.0
    assert all(g["params"] for g in groups)
    # the groups feed a torch optimizer as they are
    torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def test_param_groups_layer_lr_decay_and_frozen():
    model = ToyResNet()
    model.layer1[0].weight.requires_grad_(False)
    groups = param_groups(model, 1e-4, layer_lr_decay=0.5)
    where = _group_of(groups)
    expected_scale = {"conv1": 0.125, "bn1": 0.125, "layer1": 0.25, "layer2": 0.5, "fc": 1.0}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert id(p) not in where
            continue
        g = where[id(p)]
        assert g["lr_scale"] == expected_scale[name.split(".")[0]], name
        stage = {"conv1": "stem", "bn1": "stem", "fc": "head"}.get(name.split(".")[0], name.split(".")[0])
        assert g["name"] == f"{stage}/{'decay' if p.ndim > 1 else 'no_decay'}"
    assert len(where) == sum(p.requires_grad for p in model.parameters())
    assert [g["name"] for g in groups] == [
        "stem/decay", "stem/no_decay", "layer1/no_decay", "layer2/decay", "layer2/no_decay",
        "head/decay", "head/no_decay",
    ]


def test_param_groups_torchvision_resnet18_and_no_layers():
    from torchvision.models import resnet18

    model = resnet18(num_classes=10)
    groups = param_groups(model, 1e-4, layer_lr_decay=0.9)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    scale = {g["name"]: g["lr_scale"] for g in groups}
    assert scale["head/decay"] == 1.0 and scale["layer4/decay"] == 0.9
    assert math.isclose(scale["stem/no_decay"], 0.9**5)
    # no layer* children: one stage, scale 1
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    groups = param_groups(mlp, 1e-4, layer_lr_decay=0.5)
    summary = [(g["name"], g["lr_scale"], len(g["params"])) for g in groups]
    assert summary == [("all/decay", 1.0, 2), ("all/no_decay", 1.0, 2)]


def test_param_groups_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"^layer_lr_decay must be in \(0, 1\] \(1 = off\), got 0\.$"):
        param_groups(ToyResNet(), 1e-4, layer_lr_decay=0)
    with pytest.raises(ValueError, match=r"^weight_decay must be >= 0, got -1"):
        param_groups(ToyResNet(), -1)


def test_scaled_lr():
    assert scaled_lr(0.1, 256) == pytest.approx(0.1)
    assert scaled_lr(0.1, 1024) == pytest.approx(0.4)
    assert scaled_lr(0.1, 64, reference=128) == pytest.approx(0.05)


# ---------------------------------------------------------------- schedules


def _torch_lrs(make_scheduler, steps, base_lr=0.4):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_matches_torch():
    total = 50
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=0.01), total)
    for s in range(total):
        assert lr_at(s, total, 0.4, final_lr=0.01) == pytest.approx(ref[s], rel=1e-6), s
    assert lr_at(total, total, 0.4, final_lr=0.01) == pytest.approx(0.01)


def test_onecycle_matches_torch_every_step():
    total = 37
    kw = dict(pct_start=0.25, div_factor=10.0, final_div_factor=100.0)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.4, total_steps=total, **kw), total)
    ours = [lr_at(s, total, 0.4, schedule="onecycle", **kw) for s in range(total)]
    assert ours == pytest.approx(ref, rel=1e-9)
    default = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.4, total_steps=total), total)
    assert [lr_at(s, total, 0.4, schedule="onecycle") for s in range(total)] == pytest.approx(default, rel=1e-9)


def test_step_matches_multisteplr():
    total, milestones = 30, (10, 22)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=list(milestones), gamma=0.1), total)
    ours = [lr_at(s, total, 0.4, schedule="step", milestones=milestones) for s in range(total)]
    assert ours == pytest.approx(ref, rel=1e-12)


def test_warmup_then_schedule():
    total, warmup = 20, 4
    assert [lr_at(s, total, 0.8, warmup_steps=warmup) for s in range(warmup)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lr_at(warmup, total, 0.8, warmup_steps=warmup) == pytest.approx(0.8)  # cosine starts at t = 0
    mid = warmup + (total - warmup) // 2
    assert lr_at(mid, total, 0.8, warmup_steps=warmup) == pytest.approx(0.4)
    assert lr_at(7, total, 0.8, warmup_steps=warmup, schedule="constant") == 0.8
    assert lr_at(1, total, 0.8, warmup_steps=warmup, schedule="step", milestones=(1,)) == pytest.approx(0.4)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_clamps_past_the_end(schedule):
    end = lr_at(100, 100, 0.4, schedule=schedule, milestones=(50,), final_lr=0.001)
    assert lr_at(100_000, 100, 0.4, schedule=schedule, milestones=(50,), final_lr=0.001) == end
    expected = {"constant": 0.4, "step": 0.04, "cosine": 0.001, "onecycle": 0.4 / 25 / 1e4}[schedule]
    assert end == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(schedule="linear"), r"^schedule must be one of constant, step, cosine, onecycle; got 'linear'\.$"),
        (dict(warmup_steps=11), r"^warmup_steps \(11\) must not exceed total_steps \(10\)\.$"),
        (dict(total_steps=0), r"^total_steps must be >= 1, got 0\.$"),
        (dict(step=-1), r"^step and warmup_steps must be >= 0, got step=-1"),
        (dict(schedule="onecycle", warmup_steps=2), r"^warmup_steps must be 0 with schedule='onecycle'"),
        (dict(schedule="onecycle", pct_start=1.0), r"^pct_start must be in \(0, 1\), got 1\.0\.$"),
    ],
)
def test_schedule_errors(kwargs, message):
    """In lr_at's own argument names: the callback turns them into its config keys."""
    args = dict(step=0, total_steps=10, base_lr=0.1) | kwargs
    with pytest.raises(ValueError, match=message):
        lr_at(**args)
