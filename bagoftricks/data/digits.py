"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, 10 classes, no download.

The embedded default: a whole ablation runs on it in minutes on a laptop CPU, so every code path
(mixing, distillation, schedules, checkpoints) is exercised on real images before a GPU is rented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from bagoftricks.data.base import ImageDataModule, Split, Splits, TensorImageDataset, stratified_split
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


class DigitsDataModule(ImageDataModule):
    """The 8x8 digits, upsampled to ``image_size`` (default 32) with 3 channels, in a fixed stratified split.

    Args:
        val_fraction: share of each class held out for validation.
        test_fraction: share of each class held out for testing.
        augment: light augmentation for training: random shifts of up to 1/8 of the side
            (no flips: a mirrored 2 is not a 2).
        **kwargs: the settings every dataset shares (:class:`~bagoftricks.data.base.ImageDataModule`),
            ``split_seed`` seeding the split; nothing to download, so no ``root``.
    """

    num_classes = 10
    native_size = 32
    workers_by_default = False  # in-memory tensors: worker processes would cost more than the crop they do
    classes = [str(d) for d in range(10)]

    def __init__(
        self, *, val_fraction: float = 0.15, test_fraction: float = 0.15, augment: bool = True, **kwargs
    ) -> None:
        super().__init__(None, download=False, md5=None, **kwargs)
        if not (0 < val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"data.val_fraction ({val_fraction}) and data.test_fraction ({test_fraction}) must be "
                "positive and sum to less than 1."
            )
        self.val_fraction, self.test_fraction, self.augment = val_fraction, test_fraction, augment
        normalize = [v2.ToDtype(torch.float32, scale=True), v2.Normalize([DIGITS_MEAN] * 3, [DIGITS_STD] * 3)]
        shift = [v2.RandomCrop(self.image_size, padding=self.image_size // 8)] if augment else []
        resize = [v2.Resize(self.test_image_size, antialias=True)] if self.test_image_size != self.image_size else []
        self.train_tf, self.eval_tf = v2.Compose(shift + normalize), v2.Compose(resize + normalize)

    def read_splits(self) -> Splits:
        images, labels = load_digits_tensors(self.image_size)
        every = Split(images, labels)
        val, test, train = stratified_split(labels, (self.val_fraction, self.test_fraction), self.split_seed)
        return Splits(every.take(train), every.take(test), self.classes, val=every.take(val))

    def make_dataset(self, split: Split, name: str, train: bool) -> TensorImageDataset:
        return TensorImageDataset(split.images, split.labels, self.train_tf if train else self.eval_tf)
