"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, 10 classes, no download.

The embedded default: a whole ablation runs on it in minutes on a laptop CPU, so every code path
(mixing, distillation, schedules, checkpoints) is exercised on real images before a GPU is rented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bagoftricks.data.base import ImageDataModule, Source, Split, Splits, stratified_split
from bagoftricks.errors import ConfigError

# Pixel mean and std of all 1,797 images upsampled to 32 px (values 0..16 scaled to 0..1).
DIGITS_MEAN, DIGITS_STD = 0.305, 0.324


def load_digits_tensors(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as uint8 [N, 3, S, S] (bilinear upsampling, gray repeated) and int64 labels."""
    from sklearn.datasets import load_digits  # imported here: only this dataset needs scikit-learn

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return images, torch.from_numpy(digits.target).long()


@dataclass(kw_only=True)
class Digits(Source):
    """The 8x8 digits, upsampled to ``image_size`` (default 32) with 3 channels, in a fixed stratified split;
    nothing to download, so no ``root``. Augmented by ``'shift'`` (random shifts of up to 1/8 of the side,
    no flips: a mirrored 2 is not a 2) unless ``augment`` says otherwise.

    Args:
        val_fraction: share of each class held out for validation (seeded by ``split_seed``).
        test_fraction: share of each class held out for testing.
    """

    name: ClassVar[str] = "Digits"
    native_size: ClassVar[int] = 32
    mean: ClassVar[tuple[float, ...]] = (DIGITS_MEAN,) * 3
    std: ClassVar[tuple[float, ...]] = (DIGITS_STD,) * 3
    augment: ClassVar[str] = "shift"
    in_memory: ClassVar[bool] = True  # worker processes would cost more than the crop they do
    classes: ClassVar[list[str]] = [str(d) for d in range(10)]

    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        if not (0 < self.val_fraction and 0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise ConfigError(
                f"data.val_fraction ({self.val_fraction}) and data.test_fraction ({self.test_fraction}) must be "
                "positive and sum to less than 1."
            )

    @property
    def num_classes(self) -> int:
        return 10

    def stored_side(self, image_size: int) -> int:
        return image_size  # drawn at the training size from the 8x8 originals

    def read(self, *, image_size: int, split_seed: int) -> Splits:
        images, labels = load_digits_tensors(image_size)
        every = Split(images, labels)
        val, test, train = stratified_split(labels, (self.val_fraction, self.test_fraction), split_seed)
        return Splits(every.take(train), every.take(val), every.take(test), self.classes)


class DigitsDataModule(ImageDataModule, source=Digits):
    """scikit-learn's 1,797 handwritten 8x8 digits, in memory: a whole ablation in minutes on a laptop CPU."""
