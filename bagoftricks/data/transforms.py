"""Train and eval presets (torchvision.transforms.v2), after torchvision's references/classification/presets.py.

The ImageNet training pipeline of the paper (He et al. 2019, section 2.1, after fb.resnet.torch):
random-resized crop, horizontal flip, brightness/contrast/saturation jitter of 0.4, PCA lighting
noise of 0.1, normalization. Every preset accepts PIL images and uint8 image tensors (the decoded
cache), so the same pipeline runs with and without the cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The area range of the paper's random-resized crop (Inception-style: 8% to 100% of the image).
PAPER_CROP_SCALE = (0.08, 1.0)
# Principal components of ImageNet's RGB pixel covariance (AlexNet, Krizhevsky et al. 2012; the
# values of fb.resnet.torch): eigenvalues, and eigenvectors as the columns of the matrix.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# Per-channel mean and std of the 50,000 CIFAR-100 training images.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

AUTO_AUGMENTS = ("autoaugment", "randaugment", "trivialaugment")
# 'shift' is CIFAR's pad-and-crop without the flip (digits, text: a mirrored 2 is not a 2); 'none' only
# resizes and normalizes, as evaluation does.
AUGMENT_PRESETS = ("imagenet", "cifar", "shift", "none")
# Up to this side, images get the CIFAR preset when none is named: a random-resized crop of a
# 32-px image keeps too few pixels, and pad-and-crop is what small-image recipes use.
SMALL_IMAGE_SIDE = 64


class Lighting(v2.Transform):
    """AlexNet-style PCA lighting noise on float images in [0, 1]: ``x + eigvec @ (alpha * eigval)``.

    ``alpha ~ N(0, alphastd)`` per image and principal component, so each image gets one RGB shift
    along the principal axes of natural-image colour. Written by hand: torchvision has no such
    transform. ``generator`` pins the randomness (tests compare with the formula).
    """

    _transformed_types = (tv_tensors.Image, torch.Tensor)

    def __init__(
        self,
        alphastd: float = 0.1,
        eigval: Sequence[float] = IMAGENET_PCA_EIGVAL,
        eigvec: Sequence[Sequence[float]] = IMAGENET_PCA_EIGVEC,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.alphastd = alphastd
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)
        self.generator = generator

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        alpha = torch.randn(3, generator=self.generator) * self.alphastd
        return {"rgb": self.eigvec @ (alpha * self.eigval)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not inpt.is_floating_point():
            raise TypeError("Lighting needs float images in [0, 1]; put it after v2.ToDtype(float32, scale=True).")
        shifted = inpt + params["rgb"].to(inpt.dtype).view(-1, 1, 1)
        return tv_tensors.wrap(shifted, like=inpt) if isinstance(inpt, tv_tensors.Image) else shifted


class FastRandomResizedCrop(v2.RandomResizedCrop):
    """``v2.RandomResizedCrop`` drawing each try's four random numbers with one torch call.

    Same box distribution, same torch RNG; torchvision draws them with about ten one-element torch
    ops, a seventh of the whole per-image cost when crops come from the decoded uint8 cache.
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            u_area, u_ratio, u_top, u_left = torch.rand(4).tolist()
            target_area = height * width * (self.scale[0] + (self.scale[1] - self.scale[0]) * u_area)
            aspect_ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u_ratio)
            w = round(math.sqrt(target_area * aspect_ratio))
            h = round(math.sqrt(target_area / aspect_ratio))
            if 0 < w <= width and 0 < h <= height:
                top, left = int(u_top * (height - h + 1)), int(u_left * (width - w + 1))
                return {"top": top, "left": left, "height": h, "width": w}
        return super().make_params(flat_inputs)  # ten misses: torchvision's central-crop fallback, rarely reached


class ScaleNormalize(v2.Transform):
    """``ToDtype(float32, scale=True)`` then ``Normalize(mean, std)`` as one transform.

    The 1/255 of uint8 input is folded into mean and std (float input is taken as [0, 1]): one
    promoting subtraction and one in-place division per image instead of v2's four passes and two dispatches.
    """

    _transformed_types = (tv_tensors.Image, torch.Tensor)

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        scale = 255.0 if inpt.dtype == torch.uint8 else 1.0
        # uint8 minus float promotes to a new float32 tensor: the input is never modified.
        out = (inpt.as_subclass(torch.Tensor) - self.mean * scale).div_(self.std * scale)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out


def auto_augment_transform(
    name: str | None, policy: v2.AutoAugmentPolicy = v2.AutoAugmentPolicy.IMAGENET
) -> list[v2.Transform]:
    """The named policy as a one-item list (empty for None); runs on uint8 images.

    ``policy`` is the AutoAugment policy searched for the images at hand (ImageNet or CIFAR-10).
    """
    if name is None:
        return []
    policies = {
        "autoaugment": lambda: v2.AutoAugment(policy),
        "randaugment": v2.RandAugment,
        "trivialaugment": v2.TrivialAugmentWide,
    }
    if name not in policies:
        raise ValueError(f"auto_augment must be one of {AUTO_AUGMENTS} or None, got {name!r}")
    return [policies[name]()]


def train_transform(
    image_size: int,
    *,
    scale: tuple[float, float] = PAPER_CROP_SCALE,
    hflip: float = 0.5,
    auto_augment: str | None = None,
    color_jitter: float = 0.4,
    pca_lighting: float = 0.1,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """The paper's ImageNet training augmentation; ``color_jitter=0`` and ``pca_lighting=0`` switch those off."""
    steps: list[Any] = [FastRandomResizedCrop(image_size, scale=scale, antialias=True)]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    steps += auto_augment_transform(auto_augment)
    steps.append(v2.ToImage())
    if color_jitter > 0 or pca_lighting > 0:
        steps.append(v2.ToDtype(torch.float32, scale=True))
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    if pca_lighting > 0:
        steps.append(Lighting(pca_lighting))
    steps.append(ScaleNormalize(mean, std))
    return v2.Compose(steps)


def eval_transform(
    image_size: int,
    *,
    crop_ratio: float = 0.875,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Shorter side to ``image_size / crop_ratio`` (256 for 224), then the central square."""
    return v2.Compose(
        [
            v2.Resize(resize_side(image_size, crop_ratio), antialias=True),
            v2.CenterCrop(image_size),
            v2.ToImage(),
            ScaleNormalize(mean, std),
        ]
    )


def resize_side(image_size: int, crop_ratio: float = 0.875) -> int:
    """The shorter side evaluation resizes to before its center crop (and the decoded cache stores)."""
    return round(image_size / crop_ratio)


def cifar_train_transform(
    image_size: int = 32,
    *,
    padding: int = 4,
    hflip: float = 0.5,
    auto_augment: str | None = None,
    mean: Sequence[float] = CIFAR100_MEAN,
    std: Sequence[float] = CIFAR100_STD,
    resize: bool = False,
) -> v2.Compose:
    """The standard CIFAR augmentation: random crop of the zero-padded image (``padding`` per 32 px), flip,
    optional auto-augmentation (``'autoaugment'``: the CIFAR-10 policy). ``resize`` first scales the shorter
    side to ``image_size`` (images of any size); without it the images must come at ``image_size``."""
    steps: list[Any] = [v2.Resize(image_size, antialias=True)] if resize else []
    steps.append(v2.RandomCrop(image_size, padding=padding * image_size // 32))
    if hflip > 0:  # a flip of probability 0 would still draw a random number per image
        steps.append(v2.RandomHorizontalFlip(hflip))
    steps += auto_augment_transform(auto_augment, v2.AutoAugmentPolicy.CIFAR10)
    steps += [v2.ToImage(), ScaleNormalize(mean, std)]
    return v2.Compose(steps)


def cifar_eval_transform(
    image_size: int = 32,
    *,
    mean: Sequence[float] = CIFAR100_MEAN,
    std: Sequence[float] = CIFAR100_STD,
    resize: bool = False,
    auto_augment: str | None = None,
) -> v2.Compose:
    """The whole image, only converted and normalized; with ``resize``, first the shorter side to
    ``image_size`` and the central square (``auto_augment``: the 'none' preset's training pipeline)."""
    steps: list[Any] = [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)] if resize else []
    steps += auto_augment_transform(auto_augment, v2.AutoAugmentPolicy.CIFAR10)
    steps += [v2.ToImage(), ScaleNormalize(mean, std)]
    return v2.Compose(steps)


def default_preset(image_size: int) -> str:
    """``'cifar'`` up to 64 px (a random-resized crop of a small image keeps too few pixels), else ``'imagenet'``."""
    return "cifar" if image_size <= SMALL_IMAGE_SIDE else "imagenet"


def preset_transforms(
    augment: str,
    image_size: int,
    *,
    test_image_size: int | None = None,
    auto_augment: str | None = None,
    color_jitter: float | None = None,
    pca_lighting: float | None = None,
    crop_scale: tuple[float, float] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    stored_side: int | None = None,
) -> tuple[v2.Compose, v2.Compose]:
    """(train, eval) transforms of a preset (:data:`AUGMENT_PRESETS`): ``'imagenet'`` (the paper's pipeline),
    ``'cifar'`` (pad-and-crop, flip), ``'shift'`` (pad-and-crop) or ``'none'`` (resize only).

    ``color_jitter`` and ``pca_lighting`` None take the ImageNet preset's values (the paper's 0.4 and 0.1); the
    other presets have none; ``crop_scale`` None is its random-resized crop's (0.08, 1.0). Evaluation is at
    ``test_image_size`` (None: ``image_size``). ``stored_side``: the side every image already has (decoded
    tensors), so no resize is needed at that size; None: images of any size.
    """
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"augment must be one of {AUGMENT_PRESETS}, got {augment!r}")
    for name, value in (("color_jitter", color_jitter), ("pca_lighting", pca_lighting)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be at least 0 (0 switches it off), got {value}")
    test_image_size = test_image_size or image_size
    if augment == "imagenet":
        train = train_transform(
            image_size,
            scale=PAPER_CROP_SCALE if crop_scale is None else tuple(crop_scale),
            auto_augment=auto_augment,
            color_jitter=0.4 if color_jitter is None else color_jitter,
            pca_lighting=0.1 if pca_lighting is None else pca_lighting,
            mean=mean,
            std=std,
        )
        return train, eval_transform(test_image_size, mean=mean, std=std)
    if color_jitter or pca_lighting or crop_scale:
        raise ValueError(f"color_jitter, pca_lighting and crop_scale belong to the 'imagenet' preset, not {augment!r}")
    resize, eval_resize = stored_side != image_size, stored_side != test_image_size
    if augment == "none":
        train = cifar_eval_transform(image_size, mean=mean, std=std, resize=resize, auto_augment=auto_augment)
    else:
        hflip = 0.5 if augment == "cifar" else 0.0
        train = cifar_train_transform(image_size, hflip=hflip, auto_augment=auto_augment, mean=mean, std=std, resize=resize)
    return train, cifar_eval_transform(test_image_size, mean=mean, std=std, resize=eval_resize)
