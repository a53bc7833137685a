"""The loader wiring every dataset shares; a subclass only says where its images come from."""

from __future__ import annotations

import os

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


def default_num_workers() -> int:
    """One worker per core, leaving one for the training loop, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class TensorImageDataset(Dataset):
    """Images already decoded into one uint8 tensor; the transform runs per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[i]


def stratified_split(labels: torch.Tensor, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Indices split per class in the given fractions (the last part takes the rest), seeded."""
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        bounds = [0]
        for f in fractions:
            bounds.append(bounds[-1] + round(f * len(idx)))
        bounds.append(len(idx))
        for part, lo, hi in zip(parts, bounds[:-1], bounds[1:]):
            part.append(idx[lo:hi])
    return [torch.cat(p).sort().values for p in parts]


class ImageDataModule(L.LightningDataModule):
    """Base for the dataset modules: ``setup`` fills ``train_set``, ``val_set`` and ``test_set``.

    Subclasses set the class attribute ``num_classes`` (or set it in ``__init__``), because the
    CLI links it to ``model.num_classes`` before ``setup`` runs.

    Args:
        batch_size: images per batch on each device.
        num_workers: loader processes; ``None`` picks one per core but one, at most 8.
        image_size: side in pixels of the square images the model sees.
        pin_memory: page-locked host batches, so host-to-GPU copies can be non-blocking.
    """

    num_classes: int
    train_set: Dataset
    val_set: Dataset
    test_set: Dataset

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int | None = None,
        image_size: int = 224,
        pin_memory: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}.")
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.image_size = image_size
        self.pin_memory = pin_memory and torch.cuda.is_available()

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            # A last short batch would be a noisy step with the same LR; drop it when training.
            drop_last=train and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)
