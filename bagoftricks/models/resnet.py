"""ResNet v1 and the model tweaks of He et al. 2019 ("Bag of Tricks for Image
Classification with CNNs", arXiv 1812.01187, sec. 4) as flags of one class.

Parameter names follow torchvision (`conv1`, `bn1`, `layer1.0.conv1`, ..., `fc`),
so `resnet50b` loads torchvision's resnet50 weights with `strict=True`; the deep
stem and the avg-down shortcut follow timm's resnet50d names and shapes.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bagoftricks.models.layers import BlurPool2d, DropPath
from bagoftricks.models.pretrained import load_pretrained

_STEMS = ("imagenet", "deep", "cifar")
_ACTS = {"relu": nn.ReLU, "mish": nn.Mish}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): gate each channel by a function of all channels' means."""

    def __init__(self, channels: int, act_layer: type[nn.Module]) -> None:
        super().__init__()
        # 1/16 of the channels, at least 8: what timm's seresnet builds for every ResNet width.
        hidden = max(8, channels // 16)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.act = act_layer(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc1(s)
        s = self.act(s)
        s = self.fc2(s)
        return x * s.sigmoid()


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34, He et al. 2016).

    The stride always sits in the first 3x3 conv: no 1x1 conv can discard
    pixels here, so `stride_in_3x3` (ResNet-B) is accepted for a uniform
    signature and changes nothing.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        stride_in_3x3: bool = True,
        se: bool = False,
        act_layer: type[nn.Module] = nn.ReLU,
        drop_path_rate: float = 0.0,
        blur_pool: bool = False,
    ) -> None:
        super().__init__()
        blur = blur_pool and stride > 1
        self.conv1 = conv3x3(inplanes, planes, 1 if blur else stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = act_layer(inplace=True)
        self.aa = BlurPool2d(planes, stride) if blur else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcite(planes, act_layer) if se else nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.act2 = act_layer(inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.act1(out)
        out = self.aa(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.se(out)
        out = self.drop_path(out)
        out = out + shortcut
        return self.act2(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50/101/152, He et al. 2016).

    `stride_in_3x3=False` is the original v1 block: the stride-2 1x1 conv reads
    only a quarter of its input. ResNet-B (He et al. 2019, Fig. 2a) moves the
    stride into the 3x3 conv, which sees every pixel.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        stride_in_3x3: bool = True,
        se: bool = False,
        act_layer: type[nn.Module] = nn.ReLU,
        drop_path_rate: float = 0.0,
        blur_pool: bool = False,
    ) -> None:
        super().__init__()
        blur = blur_pool and stride > 1
        # With blur_pool the strided conv runs at stride 1 and the blur after its activation
        # subsamples (Zhang 2019's ConvBlurPool; timm's aa_layer in the 3x3 conv).
        self.blur_after_1x1 = blur and not stride_in_3x3
        conv_stride = 1 if blur else stride
        stride_1x1, stride_3x3 = (1, conv_stride) if stride_in_3x3 else (conv_stride, 1)
        outplanes = planes * self.expansion
        self.conv1 = conv1x1(inplanes, planes, stride_1x1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = act_layer(inplace=True)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = act_layer(inplace=True)
        self.aa = BlurPool2d(planes, stride) if blur else nn.Identity()
        self.conv3 = conv1x1(planes, outplanes)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.se = SqueezeExcite(outplanes, act_layer) if se else nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.act3 = act_layer(inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.act1(out)
        if self.blur_after_1x1:
            out = self.aa(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.act2(out)
        if not self.blur_after_1x1:
            out = self.aa(out)
        out = self.conv3(out)
        out = self.bn3(out)
        out = self.se(out)
        out = self.drop_path(out)
        out = out + shortcut
        return self.act3(out)


def make_shortcut(inplanes: int, outplanes: int, stride: int, avg_down: bool) -> nn.Sequential:
    """Projection shortcut of a block that changes shape."""
    if not avg_down:
        return nn.Sequential(conv1x1(inplanes, outplanes, stride), nn.BatchNorm2d(outplanes))
    # ResNet-D (He et al. 2019, Fig. 2c): a stride-2 1x1 conv ignores 3/4 of the
    # input, so average 2x2 first and project with stride 1 (timm's layout).
    if stride > 1:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    else:
        pool = nn.Identity()
    return nn.Sequential(pool, conv1x1(inplanes, outplanes), nn.BatchNorm2d(outplanes))


class ResNet(nn.Module):
    """ResNet with the tweaks of He et al. 2019 (arXiv 1812.01187) as flags.

    ResNet-50 on ImageNet: GFLOPs and top-1 from He et al. 2019 Table 5 (their
    "FLOPs" are multiply-accumulates, what `model_stats` calls macs), params as
    built here:

    ==========  ===================================  ======  ======  =====
    name        flags                                params  GFLOPs  top-1
    ==========  ===================================  ======  ======  =====
    resnet50    v1 (He et al. 2016)                  25.6M   3.8     76.21
    resnet50b   stride_in_3x3=True                   25.6M   4.1     76.66
    resnet50c   + stem='deep'                        25.6M   4.3     76.87
    resnet50d   + avg_down=True                      25.6M   4.3     77.16
    ==========  ===================================  ======  ======  =====

    The same suffixes exist for depths 18, 34, 101 and 152. Other flags:
    `stem='cifar'` (3x3 stride-1 conv, no max pool, for 32 px inputs),
    `se` (squeeze-excitation in every block, Hu et al. 2018),
    `act='mish'` (Misra 2019), `zero_init_last` (He et al. 2019 sec. 3.1),
    `drop_path_rate` (stochastic depth, Huang et al. 2016) and `blur_pool`
    (anti-aliased downsampling, Zhang 2019). The last two add no parameters,
    so torchvision and timm weights load into them unchanged.

    Args:
        block: `BasicBlock` or `Bottleneck`.
        layers: number of blocks in each of the four stages.
        num_classes: outputs of the `fc` head.
        in_chans: input image channels.
        stem: 'imagenet' (7x7/2 conv + max pool), 'deep' (ResNet-C: three 3x3
            convs, 32-32-64 channels, + max pool) or 'cifar' (3x3/1 conv, no pool).
        stride_in_3x3: ResNet-B, stride in the 3x3 conv of a downsampling bottleneck.
        avg_down: ResNet-D, 2x2 average pool before the 1x1 conv of a shortcut.
        zero_init_last: zero the gamma of the last BN in every residual block.
        se: squeeze-excitation before the residual add of every block.
        act: 'relu' or 'mish', used everywhere.
        drop_path_rate: stochastic depth rate of the last block; block i of n drops its
            residual branch with rate drop_path_rate * i / (n - 1), as timm's ResNet.
        blur_pool: blur before every subsampling where timm's `aa_layer=BlurPool2d` puts it:
            the stem max pool (max at stride 1, then blur-subsample) and the strided 3x3 conv
            (stride 1, then blur-subsample). The shortcut and the stem conv keep their
            strides, as in timm's `resnetblur50` (composer also blurs the shortcut conv).
        channels: the width of each stage (its blocks' planes), as timm's `channels`; the stem
            stays 64. Narrow widths such as (8, 16, 32, 64) make a model for tests and probes.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        stride_in_3x3: bool = False,
        avg_down: bool = False,
        zero_init_last: bool = False,
        se: bool = False,
        act: str = "relu",
        drop_path_rate: float = 0.0,
        blur_pool: bool = False,
        channels: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        if stem not in _STEMS:
            raise ValueError(f"Unknown stem {stem!r}; use one of {', '.join(_STEMS)}.")
        if act not in _ACTS:
            raise ValueError(f"Unknown act {act!r}; use one of {', '.join(_ACTS)}.")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}.")
        if len(channels) != 4 or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
            raise ValueError(f"channels must be four positive widths, one per stage, got {channels!r}.")
        act_layer = _ACTS[act]

        if stem == "deep":
            # ResNet-C (He et al. 2019 sec. 4.2, Fig. 2b): three 3x3 convs replace the
            # 7x7 one, which costs 5.4x a 3x3; bn1 follows the last, as in timm's resnet50d.
            self.conv1 = nn.Sequential(
                conv3x3(in_chans, 32, stride=2),
                nn.BatchNorm2d(32),
                act_layer(inplace=True),
                conv3x3(32, 32),
                nn.BatchNorm2d(32),
                act_layer(inplace=True),
                conv3x3(32, 64),
            )
        elif stem == "cifar":
            self.conv1 = conv3x3(in_chans, 64)
        else:
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = act_layer(inplace=True)
        # A 32 px image has no resolution to spare: the cifar stem keeps it whole.
        if stem == "cifar":
            self.maxpool = nn.Identity()
            strides = [1]
        else:
            if blur_pool:
                # Max then blur-subsample: Zhang 2019's MaxBlurPool, timm's layout under the same name.
                self.maxpool = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1), BlurPool2d(64, 2))
            else:
                self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            strides = [2, 2]  # the stem conv, then the max pool

        block_args = dict(stride_in_3x3=stride_in_3x3, se=se, act_layer=act_layer, blur_pool=blur_pool)
        # Stochastic depth's linear rule (Huang et al. 2016 sec. 3): deeper blocks drop more
        # often; the first block never, the last with drop_path_rate (timm's per-block rates).
        n_blocks = sum(layers)
        drop_rates = iter([drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)])
        inplanes = 64
        stages = []
        for index, (planes, depth) in enumerate(zip(channels, layers)):
            stride = 1 if index == 0 else 2
            strides.append(stride)
            outplanes = planes * block.expansion
            downsample = None
            if stride != 1 or inplanes != outplanes:
                downsample = make_shortcut(inplanes, outplanes, stride, avg_down)
            blocks = [block(inplanes, planes, stride, downsample, drop_path_rate=next(drop_rates), **block_args)]
            blocks += [block(outplanes, planes, drop_path_rate=next(drop_rates), **block_args) for _ in range(1, depth)]
            stages.append(nn.Sequential(*blocks))
            inplanes = outplanes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # Input pixels per pixel of the last feature map (timm's feature_info "reduction").
        self.total_stride = math.prod(strides)
        self.blur_pool = blur_pool

        self.num_features = inplanes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            # Every block starts as the identity, so the network starts shallow and
            # is easier to train early on (He et al. 2019 sec. 3.1; Goyal et al. 2017).
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


# Registry: one row per name; the suffix adds the tweaks of He et al. 2019 Fig. 2 cumulatively.
_DEPTHS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
_TWEAKS = {
    "": {},
    "b": {"stride_in_3x3": True},
    "c": {"stride_in_3x3": True, "stem": "deep"},
    "d": {"stride_in_3x3": True, "stem": "deep", "avg_down": True},
}
_MODELS = {
    f"resnet{depth}{suffix}": {"block": block, "layers": layers, **flags}
    for depth, (block, layers) in _DEPTHS.items()
    for suffix, flags in _TWEAKS.items()
}
# The ResNet flags create_model (and a config's model.backbone_kwargs) takes.
MODEL_FLAGS = tuple(p for p in inspect.signature(ResNet).parameters if p not in ("block", "layers", "num_classes"))


def list_models() -> list[str]:
    """Names accepted by `create_model`."""
    return sorted(_MODELS)


def create_model(
    name: str, num_classes: int = 1000, pretrained: str | os.PathLike | None = None, **overrides
) -> ResNet:
    """Build a registered ResNet, e.g. `create_model("resnet50d", 10, zero_init_last=True)`.

    `overrides` are any `ResNet` flags (in_chans, stem, stride_in_3x3, avg_down,
    zero_init_last, se, act, drop_path_rate, blur_pool, channels); `pretrained` goes to `load_pretrained`.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"Unknown model {name!r}{hint}; see bagoftricks.models.list_models() for the names.")
    unknown = sorted(set(overrides) - set(MODEL_FLAGS))
    if unknown:
        raise ValueError(f"Unknown model flag(s) {', '.join(unknown)}; the flags are {', '.join(MODEL_FLAGS)}.")
    model = ResNet(num_classes=num_classes, **{**_MODELS[name], **overrides})
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


def min_image_size(model: ResNet | str, **flags) -> int:
    """Smallest input side a backbone takes, from its total stride: half of it (16 px, or 4 with
    `stem='cifar'`), so that the last stage's stride-2 layer starts from one whole pixel; with
    `blur_pool` one more (17, 5), since BlurPool's reflect padding needs two pixels there.

    Padded stride-2 layers never fail on smaller inputs (every map rounds up to 1 px), they only
    turn more of each stage into padding; BlurPool does fail. `model` is a ResNet or a
    `create_model` name with its `flags`.
    """
    if isinstance(model, str):
        with torch.device("meta"):  # only the layout is needed, not the weights
            model = create_model(model, **flags)
    return model.total_stride // 2 + (1 if model.blur_pool else 0)


def model_stats(model: nn.Module, image_size: int = 224, in_chans: int = 3) -> dict[str, int]:
    """Parameters and multiply-accumulates for one image, counted by torch.utils.flop_counter.

    FlopCounterMode counts convolutions and matrix multiplies only (not BN,
    activations or pooling); a MAC is 2 FLOPs.
    """
    params = sum(p.numel() for p in model.parameters())
    first = next(model.parameters())
    image = torch.zeros(1, in_chans, image_size, image_size, device=first.device, dtype=first.dtype)
    was_training = model.training
    model.eval()  # measuring must not move BN's running statistics
    try:
        # force_eager: a torch.compile'd model is counted as it is, not compiled again for this shape.
        with torch.no_grad(), torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False) as counter:
            model(image)
    finally:
        model.train(was_training)
    return {"params": params, "macs": counter.get_total_flops() // 2}
