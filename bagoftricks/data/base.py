"""The one DataModule every dataset shares: settings checked once, splits, training subsets, loaders.

A dataset adds only what is its own: ``read_splits`` (where its images are, how labels are read),
``make_dataset`` (its images as a torch Dataset), and, if it downloads, an ``archive``. Its
constructor declares only its own keys, keyword-only, and hands every shared key on through
``**kwargs`` (jsonargparse follows that into this signature, so ``--data.batch_size`` works for all).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from bagoftricks.data.download import Archive, prepare_dataset
from bagoftricks.data.samplers import RASampler
from bagoftricks.errors import ConfigError

# Smallest side a data module serves: below it a ResNet's 32x downsampling leaves nothing to learn from.
MIN_IMAGE_SIZE = 8
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def default_num_workers() -> int:
    """One worker per core, leaving one for the training loop, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def check_int(key: str, value, low: int, hint: str = "") -> None:
    """ConfigError naming ``data.<key>`` unless ``value`` is an int of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"data.{key} must be a whole number of at least {low}{hint}, got {value!r}.")


def available_memory() -> int:
    """Bytes of memory a new allocation can take without swapping (psutil's estimate; total RAM without it)."""
    try:
        import psutil  # a dependency of Lightning's, so nearly always there

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gigabytes(nbytes: int) -> str:
    return f"{nbytes / 1e9:.1f} GB"


@dataclass
class Split:
    """One split's images (a uint8 [N, 3, H, W] tensor or a list of file paths) and their int64 labels."""

    images: torch.Tensor | list[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> Split:
        if isinstance(self.images, torch.Tensor):
            return Split(self.images[index], self.labels[index])
        return Split([self.images[i] for i in index.tolist()], self.labels[index])


@dataclass
class Splits:
    """What a dataset reads: its training images, its official evaluation split, and its own validation split if any."""

    train: Split
    test: Split | None
    classes: list[str]
    val: Split | None = None


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


def _parts(n: int, fractions: tuple[float, ...], at_least_one: bool) -> list[int]:
    counts = []
    for f in fractions:
        k = round(f * n)
        if at_least_one and f > 0 and k == 0 and n - sum(counts) > 1:
            k = 1
        counts.append(k)
    return counts


def stratified_split(
    labels: torch.Tensor, fractions: tuple[float, ...], seed: int, *, at_least_one: bool = False
) -> list[torch.Tensor]:
    """Indices split per class in the given fractions (the last part takes the rest), seeded.

    ``at_least_one`` gives every part at least one image of each class that has an image left to
    train on, so a small folder's validation split still sees every class.
    """
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        bounds = [0]
        for k in _parts(len(idx), fractions, at_least_one):
            bounds.append(bounds[-1] + k)
        bounds.append(len(idx))
        for part, lo, hi in zip(parts, bounds[:-1], bounds[1:]):
            part.append(idx[lo:hi])
    return [torch.cat(p).sort().values for p in parts]


def cap_per_class(labels: torch.Tensor, max_per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of at most ``max_per_class`` images of each class, drawn without replacement, seeded."""
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=generator)[:max_per_class]])
    return torch.cat(keep).sort().values


class ImageDataModule(L.LightningDataModule):
    """The shared base of every dataset module: checked settings, held-out validation, subsets, loaders.

    ``setup`` reads the dataset's splits, holds out validation images from the training images if
    the dataset has no validation split of its own (``split_off_val``), caps the training images per
    class, and builds the datasets. The dataset's official evaluation split is ``test``; with no
    held-out split (``val_fraction 0`` / ``val_size 0``) validation runs on it, as leaderboards do.

    Args:
        root: folder that holds the dataset, laid out as its archive extracts.
        batch_size: images per batch on each device.
        num_workers: loader processes; None picks the dataset's choice (one per core but one, at most
            8, for images on disk; none for small in-memory tensors, whose workers cost more than they do).
        image_size: side in pixels of the square images the model sees; None: the dataset's usual size.
        test_image_size: side of the validation and test images, when it differs from the training
            crop (FixRes, Touvron et al. 2019: random-resized crops make objects look larger in training,
            so testing a little larger helps; torchvision's ResNet-50 recipe trains at 176 and tests at
            224); None: ``image_size``.
        pin_memory: page-locked host batches, so host-to-GPU copies can be non-blocking.
        split_seed: seed of the held-out validation split and of the training subset, fixed so
            every run of an ablation sees the same images.
        max_per_class: train on at most this many images per class (a seeded, stratified subset;
            validation and test stay whole), for budgets and few-shot studies; None: all.
        repeated_aug: each training image this many times per epoch, each copy with its own
            augmentation (repeated augmentation, Hoffer et al. 2020; DeiT uses 3): an epoch keeps
            its length and sees 1/repeated_aug as many distinct images. 1: off.
        download: download and extract the dataset's archive into ``root`` if its folder is missing.
        md5: accept an archive with this MD5 instead of the published ones (after an upstream re-upload).
    """

    num_classes: int
    classes: list[str]
    archive: Archive | None = None  # where a downloadable dataset's archive is and how to check it
    native_size = 224  # image_size when none is given
    workers_by_default = True  # False: num_workers None means 0
    train_set: Dataset
    val_set: Dataset
    test_set: Dataset

    def __init__(
        self,
        root: str | None = "data",
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        image_size: int | None = None,
        test_image_size: int | None = None,
        pin_memory: bool = True,
        split_seed: int = 0,
        max_per_class: int | None = None,
        repeated_aug: int = 1,
        download: bool = False,
        md5: str | None = None,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        if num_workers is not None:
            check_int("num_workers", num_workers, 0)
        image_size = self.native_size if image_size is None else image_size
        check_int("image_size", image_size, MIN_IMAGE_SIZE, " pixels")
        if test_image_size is not None:
            check_int("test_image_size", test_image_size, MIN_IMAGE_SIZE, " pixels (or null for data.image_size)")
        if max_per_class is not None:
            check_int("max_per_class", max_per_class, 1, " (or null for every image)")
        check_int("repeated_aug", repeated_aug, 1, " (1 = off; DeiT uses 3)")
        self.check_batch_fits(batch_size, image_size, test_image_size or image_size)
        if (download or md5) and type(self).archive is None:
            raise ConfigError(
                f"{type(self).__name__} reads images already on disk and downloads nothing: "
                "drop data.download and data.md5 and set data.root to your folder."
            )
        self.root = None if root is None else os.path.expanduser(root)
        self.batch_size, self.image_size = batch_size, image_size
        self.test_image_size = image_size if test_image_size is None else test_image_size
        if num_workers is None:
            num_workers = default_num_workers() if self.workers_by_default else 0
        self.num_workers = num_workers
        self.split_seed, self.max_per_class, self.repeated_aug = split_seed, max_per_class, repeated_aug
        self.download, self.md5 = download, md5
        self.pin_memory = pin_memory and torch.cuda.is_available()

    @staticmethod
    def check_batch_fits(batch_size: int, image_size: int, test_image_size: int) -> None:
        """One sentence, before anything is read, for an image size whose batches the memory cannot hold."""
        key, side = ("test_image_size", test_image_size) if test_image_size > image_size else ("image_size", image_size)
        need, have = batch_size * 3 * side * side * 4, available_memory()  # float32 pixels
        if 2 * need > have:
            raise ConfigError(
                f"data.{key} {side} makes one batch of {batch_size} images {gigabytes(need)} of float32 pixels, more than "
                f"half the {gigabytes(have)} of memory available: lower data.{key} or data.batch_size."
            )

    # --- what a dataset provides -----------------------------------------------------------------

    def read_splits(self) -> Splits:
        """The dataset's images and labels (checked: a missing or broken dataset raises a DataError)."""
        raise NotImplementedError(f"{type(self).__name__} must say where its images are (read_splits).")

    def make_dataset(self, split: Split, name: str, train: bool) -> Dataset:
        """``split`` as a Dataset with the training or evaluation transform."""
        raise NotImplementedError(f"{type(self).__name__} must say how its images are served (make_dataset).")

    def split_off_val(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(validation, training) indices held out of ``labels``, or None to validate on the test split."""
        return None

    def no_training_images(self, held_out: int) -> str:
        """The sentence for a training split left empty."""
        return f"{type(self).__name__} has no training images left ({held_out} validation images): add images, or hold fewer out."

    def prepare_split(self, dataset: Dataset, name: str) -> None:
        """Work a split needs before its first batch (decoding a cache), done only for the stages that run."""

    # --- shared ----------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.archive is not None:
            prepare_dataset(self.root, self.archive, download=self.download, md5=self.md5)

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_set"):
            self._build_splits()
        for name in STAGE_SPLITS.get(stage, ("train", "val", "test")):
            dataset = getattr(self, f"{name}_set")
            if id(dataset) not in self._prepared:
                self.prepare_split(dataset, name)
                self._prepared.add(id(dataset))

    def _build_splits(self) -> None:
        splits = self.read_splits()
        self.classes = splits.classes
        train, val, test = splits.train, splits.val, splits.test
        if val is None:
            held_out = self.split_off_val(train.labels)
            if held_out is not None:
                val, train = train.take(held_out[0]), train.take(held_out[1])
            else:
                val = test
        if val is None:
            raise ConfigError(
                f"{type(self).__name__} found no validation or test images: hold some out with "
                "data.val_fraction above 0, or add a val/ or test/ folder."
            )
        if len(train) == 0:
            raise ConfigError(self.no_training_images(held_out=len(val)))
        if self.max_per_class is not None:
            train = train.take(cap_per_class(train.labels, self.max_per_class, self.split_seed))
        self._prepared: set[int] = set()
        self.train_set = self.make_dataset(train, "train", train=True)
        self.val_set = self.make_dataset(val, "val", train=False)
        # No official evaluation split: test is validation, so nothing is evaluated twice.
        self.test_set = self.val_set if test is None or test is val else self.make_dataset(test, "test", train=False)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        sampler = None
        if train and self.repeated_aug > 1:
            # Seeded like the run (seed_everything), the same on every rank; a DistributedSampler, so
            # Lightning under DDP keeps it and calls its set_epoch.
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            sampler = RASampler(dataset, seed=seed, repetitions=self.repeated_aug)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
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
