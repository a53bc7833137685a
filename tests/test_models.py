"""ResNet variants against torchvision and timm, the paper's counts, and weight loading."""

import pytest
import timm
from host_reads import HostReads
import torch
import torchvision
from torch import nn

from bagoftricks.models import ResNet, create_model, list_models, min_image_size, model_stats
from bagoftricks.models.layers import BlurPool2d, drop_path
from bagoftricks.models.resnet import BasicBlock


def on_meta(name, **kwargs):
    """Build without allocating weights: enough for shapes, counts, or loading with assign=True."""
    with torch.device("meta"):
        return create_model(name, **kwargs)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def randomize_bn(model):
    """Random BN affine and statistics, so no block is an identity (timm zero-inits the last gamma)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def last_bns(model):
    """Names of the last BN of every residual block."""
    blocks = [(name, m) for name, m in model.named_modules() if hasattr(m, "zero_init_last")]
    return {name + (".bn3" if hasattr(m, "bn3") else ".bn2") for name, m in blocks}


@pytest.mark.parametrize(
    ("name", "reference"),
    [("resnet18", torchvision.models.resnet18), ("resnet50b", torchvision.models.resnet50)],
)
def test_matches_torchvision(name, reference):
    torch.manual_seed(0)
    theirs = randomize_bn(reference()).eval()
    ours = on_meta(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize(
    ("name", "flags", "timm_name"),
    [
        ("resnet50d", {}, "resnet50d"),
        ("resnet50c", {}, "resnet50c"),
        ("resnet18d", {}, "resnet18d"),
        ("resnet50b", {"se": True}, "seresnet50"),
        ("resnet18", {"se": True}, "seresnet18"),
        ("resnet18d", {"channels": (8, 16, 32, 64)}, "resnet18d"),
    ],
    ids=["resnet50d", "resnet50c", "resnet18d", "se-resnet50b", "se-resnet18", "narrow-resnet18d"],
)
def test_matches_timm(name, flags, timm_name):
    """Same key names, shapes and order as timm, and the same function once timm's weights are loaded."""
    torch.manual_seed(0)
    widths = {"channels": flags["channels"]} if "channels" in flags else {}
    theirs = randomize_bn(timm.create_model(timm_name, **widths)).eval()
    ours = on_meta(name, **flags).eval()
    shapes = [(k, v.shape) for k, v in ours.state_dict().items()]
    assert shapes == [(k, v.shape) for k, v in theirs.state_dict().items()]
    assert n_params(ours) == n_params(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("resnet18", 11_689_512),
        ("resnet50", 25_557_032),
        ("resnet50b", 25_557_032),
        ("resnet50d", 25_576_264),
        ("resnet152", 60_192_808),
    ],
)
def test_param_counts(name, params):
    assert n_params(on_meta(name)) == params


@pytest.mark.parametrize(("name", "macs"), [("resnet50", 3.86e9), ("resnet50b", 4.09e9), ("resnet50d", 4.33e9)])
def test_macs_at_224(name, macs):
    """He et al. 2019 Table 5: 3.8, 4.1 and 4.3 GFLOPs (multiply-accumulates)."""
    stats = model_stats(on_meta(name), image_size=224)
    assert stats["macs"] == pytest.approx(macs, rel=0.01)


def test_model_stats_restores_training_mode():
    model = create_model("resnet18", 10)
    model_stats(model, image_size=32)
    assert model.training
    model.eval()
    model_stats(model, image_size=32)
    assert not model.training


@pytest.mark.parametrize("name", list_models())
def test_every_name_builds(name):
    model = on_meta(name, num_classes=7)
    assert model(torch.zeros(1, 3, 64, 64, device="meta")).shape == (1, 7)


def test_stride_position():
    plain, b = on_meta("resnet50"), on_meta("resnet50b")
    assert (plain.layer2[0].conv1.stride, plain.layer2[0].conv2.stride) == ((2, 2), (1, 1))
    assert (b.layer2[0].conv1.stride, b.layer2[0].conv2.stride) == ((1, 1), (2, 2))


def test_avg_down_shortcut():
    d = on_meta("resnet50d")
    pool, conv, _ = d.layer2[0].downsample
    assert isinstance(pool, nn.AvgPool2d) and conv.stride == (1, 1)
    assert isinstance(d.layer1[0].downsample[0], nn.Identity)  # stride 1: nothing to average
    assert on_meta("resnet50c").layer2[0].downsample[0].stride == (2, 2)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_zero_init_last(name):
    model = create_model(name, zero_init_last=True)
    last = last_bns(model)
    assert len(last) == sum(len(getattr(model, f"layer{i}")) for i in range(1, 5))
    for bn_name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert bool((m.weight == 0).all()) == (bn_name in last), bn_name
    assert all(bool((m.weight == 1).all()) for m in create_model(name).modules() if isinstance(m, nn.BatchNorm2d))


def test_cifar_stem_keeps_resolution():
    model = create_model("resnet18", 10, stem="cifar")
    seen = []
    model.layer1.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert seen == [(2, 64, 32, 32)]


def test_se_adds_params_mish_does_not():
    base = n_params(on_meta("resnet50d"))
    se = create_model("resnet18d", 10, se=True)
    assert se(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert n_params(on_meta("resnet50d", se=True)) > base
    mish = create_model("resnet18d", 10, act="mish")
    assert mish(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert any(isinstance(m, nn.Mish) for m in mish.modules())
    assert not any(isinstance(m, nn.ReLU) for m in mish.modules())
    assert n_params(on_meta("resnet50d", act="mish")) == base


@pytest.mark.parametrize("name", ["resnet18", "resnet18d"])
def test_one_input_channel(name):
    model = create_model(name, 10, in_chans=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match=r"resnet05.*did you mean resnet50"):
        create_model("resnet05")


@pytest.mark.parametrize(
    ("flag", "value", "allowed"), [("stem", "foo", "imagenet, deep, cifar"), ("act", "gelu", "relu, mish")]
)
def test_bad_flag_value(flag, value, allowed):
    with pytest.raises(ValueError, match=allowed):
        create_model("resnet18", **{flag: value})


def test_unknown_flag():
    with pytest.raises(ValueError, match="zero_init_last"):
        create_model("resnet18", zero_gamma=True)


def test_resnet_class_builds_the_registered_models():
    """The public class with resnet18's rows gives resnet18's weights, draw for draw."""
    torch.manual_seed(0)
    direct = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=5).state_dict()
    torch.manual_seed(0)
    registered = create_model("resnet18", 5).state_dict()
    assert list(direct) == list(registered)
    assert all(torch.equal(direct[k], registered[k]) for k in direct)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5])
def test_num_classes_must_be_positive(num_classes):
    with pytest.raises(ValueError, match=f"num_classes must be a positive integer, got {num_classes}"):
        create_model("resnet18", num_classes)


@pytest.mark.parametrize(
    ("name", "flags", "size"),
    [("resnet18", {}, 16), ("resnet50d", {}, 16), ("resnet18", {"stem": "cifar"}, 4),
     ("resnet18", {"blur_pool": True}, 17), ("resnet18", {"stem": "cifar", "blur_pool": True}, 5)],
)  # fmt: skip
def test_min_image_size_from_the_total_stride(name, flags, size):
    """At the smallest size the last stage starts from one pixel and the model runs; with
    blur_pool one pixel less fails (reflect padding of a 1-px map), so the bound is tight."""
    model = create_model(name, 3, **flags).eval()
    assert min_image_size(name, **flags) == min_image_size(model) == size
    seen = []
    model.layer4.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[-2:]))
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 3)
        if flags.get("blur_pool"):
            with pytest.raises(RuntimeError, match="[Pp]adding"):
                model(torch.randn(1, 3, size - 1, size - 1))
    assert seen[0] == ((2, 2) if flags.get("blur_pool") else (1, 1))


def test_drop_path_expectation_is_the_input():
    """Per-sample drops scaled by 1/keep: the mean over many samples is the undropped branch."""
    x = torch.randn(1, 6).expand(200_000, 6)
    out = drop_path(x, 0.3, generator=torch.Generator().manual_seed(0))
    dropped = (out == 0).all(1)
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.005)
    torch.testing.assert_close(out[~dropped], x[~dropped] / 0.7)  # kept samples whole, scaled
    torch.testing.assert_close(out.mean(0), x[0], atol=0.01, rtol=0.01)
    assert drop_path(x, 0.3, training=False) is x


def test_drop_path_matches_timm_function():
    x = torch.randn(16, 3, 4, 4)
    torch.manual_seed(0)
    expected = timm.layers.drop_path(x, 0.25, training=True)
    torch.manual_seed(0)
    torch.testing.assert_close(drop_path(x, 0.25), expected)


@pytest.mark.parametrize("size", [7, 8, 33])
def test_blur_pool_layer_matches_timm(size):
    x = torch.randn(2, 5, size, size)
    expected = timm.layers.BlurPool2d(channels=5, filt_size=3, stride=2)(x)
    torch.testing.assert_close(BlurPool2d(5, stride=2)(x), expected)
    assert BlurPool2d(5).state_dict() == {}  # nothing new to save or load


def timm_drop_rates(model):
    return [getattr(block.drop_path, "drop_prob", 0.0) for i in range(1, 5) for block in getattr(model, f"layer{i}")]


@pytest.mark.parametrize(("name", "timm_name"), [("resnet50d", "resnet50d"), ("resnet18", "resnet18")])
def test_drop_path_matches_timm(name, timm_name):
    """timm's per-block rates, and in training the same output as timm's model for the same random draws."""
    torch.manual_seed(0)
    theirs = randomize_bn(timm.create_model(timm_name, drop_path_rate=0.2)).train()
    ours = on_meta(name, drop_path_rate=0.2).train()
    assert timm_drop_rates(ours) == pytest.approx(timm_drop_rates(theirs))
    assert timm_drop_rates(ours)[0] == 0.0 and timm_drop_rates(ours)[-1] == pytest.approx(0.2)
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(1)
        expected = theirs(x)
        torch.manual_seed(1)
        torch.testing.assert_close(ours(x), expected)
        torch.manual_seed(2)
        assert not torch.allclose(ours(x), expected)  # other draws drop other branches


def test_drop_path_and_blur_pool_read_nothing_back():
    """A training forward with both flags never waits on the device for a value."""
    model = create_model("resnet18", 3, drop_path_rate=0.3, blur_pool=True).train()
    with HostReads() as reads:
        model(torch.randn(4, 3, 32, 32))
    assert reads.ops == []


def test_drop_path_is_identity_in_eval():
    torch.manual_seed(0)
    plain = randomize_bn(create_model("resnet18", 4)).eval()
    dropped = create_model("resnet18", 4, drop_path_rate=0.5).eval()
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dropped(x), plain(x))


def test_drop_path_rate_out_of_range():
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\), got 1.0"):
        create_model("resnet18", drop_path_rate=1.0)


@pytest.mark.parametrize(
    ("name", "timm_name"),
    [("resnet18", "resnetblur18"), ("resnet50b", "resnetblur50"), ("resnet50d", "resnetblur50d")],
)
def test_blur_pool_matches_timm(name, timm_name):
    """Where timm's aa_layer=BlurPool2d puts the blur, the same output with timm's weights,
    and the same state dict keys as without the flag (torchvision weights still load strictly)."""
    torch.manual_seed(0)
    theirs = randomize_bn(timm.create_model(timm_name)).eval()
    ours = create_model(name, blur_pool=True).eval()
    assert list(ours.state_dict()) == list(create_model(name).state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_blur_pool_on_resnet_v1_blurs_after_the_strided_1x1():
    model = create_model("resnet50", 3, blur_pool=True)
    block = model.layer2[0]
    assert block.conv1.stride == block.conv2.stride == (1, 1) and block.aa.stride == 2
    size = min_image_size(model)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 3)


def test_blur_pool_keeps_torchvision_weights_loading():
    model = create_model("resnet50b", blur_pool=True)
    model.load_state_dict(torchvision.models.resnet50().state_dict(), strict=True)
