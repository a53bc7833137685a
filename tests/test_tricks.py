"""Unit tests of ``bagoftricks.tricks`` against torch/timm references and the papers' formulas
(mixing: tests/test_mixing.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from host_reads import HostReads
from torch import nn

from bagoftricks.tricks import (
    SCHEDULES,
    distillation_loss,
    lr_at,
    param_groups,
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
    with pytest.raises(ValueError, match=r"^target must hold integer class ids, got dtype torch\.\w+; pass the labels"):
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


# ---------------------------------------------------------------- host reads (issue 17)


def test_host_reads_counter_sees_reads():
    """The counter itself: the reads the tricks used to make are seen, and the copies from the
    host that block (random erasing's boxes used to be one)."""
    labels, concentration, x = torch.tensor([1, 2]), torch.tensor(0.2), torch.zeros(2)
    for read in (
        lambda: torch.ones(()).item(),
        lambda: bool(torch.ones(()) > 0),
        lambda: F.one_hot(labels, 3),  # its range check reads min and max
        # validated explicitly: torch.compile (test_module) turns the default validation off process-wide
        lambda: torch.distributions.Beta(concentration, concentration, validate_args=True).sample(),
        lambda: torch.tensor([[0, 1, 2, 3]]),  # Python values into a tensor: a host-to-device copy on a GPU
        lambda: x.new_tensor(5.0),
        lambda: torch.as_tensor([0.5], device=x.device),
        lambda: x.to("meta"),  # a copy off the CPU without non_blocking
    ):
        with HostReads() as reads:
            read()
        assert reads.ops, read
    with HostReads() as reads:  # what is not a read: device-side factories, a non-blocking copy, a tensor passed on
        torch.full((2,), 3.0), torch.as_tensor(x), x.to("meta", non_blocking=True)
    assert reads.ops == []


def test_losses_read_nothing_on_the_host(batch):
    logits, y = batch
    teacher = logits.flip(0)
    with HostReads() as reads:
        target = smooth_targets(y, C, 0.1)
        soft_target_cross_entropy(logits, target)
        distillation_loss(logits, teacher, y, 4.0, 0.3)
        distillation_loss(logits, teacher, target, 4.0, 0.3)
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
