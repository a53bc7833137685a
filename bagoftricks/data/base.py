"""One image data module for every dataset, composed with a small description of the dataset.

A dataset is a :class:`Source`: a dataclass whose fields are its own ``data.*`` keys (``root``,
``size``, ``val_fraction``, ...) and which says where its files are, how it reads its splits, its
classes, its native size, its normalisation and its augmentation preset. :class:`ImageDataModule`
does the rest for all of them alike: settings checked once, transforms, the decoded cache, training
subsets, loaders. A public ``XxxDataModule`` is a one-line binding,
``class CUB200DataModule(ImageDataModule, source=CUB200)``, whose constructor shows every key with
its type and default (to ``help``, ``inspect.signature`` and the CLI alike).
"""

from __future__ import annotations

import inspect
import os
import re
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from bagoftricks.data.download import prepare_dataset
from bagoftricks.data.images import ImageFileDataset, available_memory, disk_cache_folder, gigabytes
from bagoftricks.data.samplers import RASampler
from bagoftricks.data.transforms import AUGMENT_PRESETS, AUTO_AUGMENTS, IMAGENET_MEAN, IMAGENET_STD, default_preset, preset_transforms, resize_side
from bagoftricks.errors import ConfigError

# Smallest side a data module serves: below it a ResNet's 32x downsampling leaves nothing to learn from.
MIN_IMAGE_SIZE = 8
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
Augment = Literal["imagenet", "cifar", "shift", "none"]
AutoAugment = Literal["autoaugment", "randaugment", "trivialaugment"]
CacheMode = Literal["none", "memory", "disk"]
CACHE_MODES = typing.get_args(CacheMode)
CACHE_KEYS = ("cache", "cache_side", "cache_dir", "skip_corrupt")  # datasets of image files only
assert typing.get_args(Augment) == AUGMENT_PRESETS and typing.get_args(AutoAugment) == AUTO_AUGMENTS


def default_num_workers() -> int:
    """One worker per core, leaving one for the training loop, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def check_int(key: str, value, low: int, hint: str = "") -> None:
    """ConfigError naming ``data.<key>`` unless ``value`` is an int of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"data.{key} must be a whole number of at least {low}{hint}, got {value!r}.")


def check_choice(key: str, value, choices: tuple, hint: str = "") -> None:
    if value not in choices:
        raise ConfigError(f"data.{key} must be one of {choices}{hint}, got {value!r}.")


# --------------------------------------------------------------------------------------- splits


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
    """What a dataset reads: training and validation images, its official evaluation split (None: test is validation)."""

    train: Split
    val: Split
    test: Split | None
    classes: list[str]


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


def hold_out(train: Split, key: str, value: float, seed: int, *, count: bool = False) -> tuple[Split, Split]:
    """(validation, training) held out of ``train`` by ``data.<key>``: a share of each class (seeded,
    at least one image of each class that has two), or with ``count`` about that many images in all."""
    n = len(train)
    if count and value >= n:
        raise ConfigError(f"data.{key} ({value}) must be smaller than the {n} training images.")
    fraction = value / n if count else value
    val, rest = stratified_split(train.labels, (fraction,), seed, at_least_one=not count)
    if len(val) == 0:
        raise ConfigError(f"data.{key} {value} holds out no image of any class: raise it, or set 0 to validate on the test split.")
    if len(rest) == 0:
        raise ConfigError(f"data.{key} {value} holds out all {n} training images, leaving none to train on: lower it.")
    return train.take(val), train.take(rest)


def cap_per_class(labels: torch.Tensor, max_per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of at most ``max_per_class`` images of each class, drawn without replacement, seeded."""
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=generator)[:max_per_class]])
    return torch.cat(keep).sort().values


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


# --------------------------------------------------------------------------------------- sources


class Source:
    """What one dataset is. A subclass is a dataclass whose fields are the dataset's own ``data.*`` keys,
    checked in ``__post_init__``; the class attributes below say the rest.

    ``read`` returns the splits with validation already held out (:func:`hold_out`), checked: a
    missing or broken dataset raises a DataError naming the file and the fix.
    """

    name: ClassVar[str]  # for messages: "Imagenette"
    native_size: ClassVar[int] = 224  # data.image_size when none is given
    mean: ClassVar[tuple[float, ...]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, ...]] = IMAGENET_STD
    augment: ClassVar[str | None] = None  # the preset when data.augment is null; None: by image size
    in_memory: ClassVar[bool] = False  # images come as one decoded tensor: no cache keys, no loader workers by default

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def read(self, *, image_size: int, split_seed: int) -> Splits:
        raise NotImplementedError

    def stored_side(self, image_size: int) -> int | None:
        """The side every image already has (decoded tensors), or None for files of any size."""
        return None

    @property
    def cache_name(self) -> str:
        """The disk cache's file name prefix: the dataset's folder."""
        return Path(self.root).name

    def prepare(self) -> None:
        """Work done once per node before ``setup`` (downloading); nothing for a folder already on disk."""


@dataclass(kw_only=True)
class Downloadable:
    """The keys of a dataset that comes as an archive; mixed into its Source, which defines ``archive``.

    Args:
        download: download and extract the dataset's archive into ``root`` if its folder is missing.
        md5: accept an archive with this MD5 instead of the published ones (after an upstream re-upload).
    """

    download: bool = False
    md5: str | None = None

    @property
    def cache_name(self) -> str:
        return self.archive.folder

    def prepare(self) -> None:
        prepare_dataset(self.root, self.archive, download=self.download, md5=self.md5)


# --------------------------------------------------------------------------------------- the data module


class ImageDataModule(L.LightningDataModule):
    """The one data module: a :class:`Source` plus the settings every dataset shares.

    ``setup`` reads the source's splits (validation already held out, or the official evaluation split
    when none is), caps the training images per class, and builds the datasets. Every key is readable
    as an attribute (``dm.image_size``, ``dm.root``), the source's through the module.

    Args:
        batch_size: images per batch on each device.
        num_workers: loader processes; None picks the dataset's choice (one per core but one, at most 8,
            for images on disk; none for small in-memory tensors, whose workers cost more than they do).
        image_size: side in pixels of the square images the model sees; None: the dataset's native size.
        test_image_size: side of the validation and test images, when it differs from the training crop
            (FixRes, Touvron et al. 2019: random-resized crops make objects look larger in training, so
            testing a little larger helps; torchvision's ResNet-50 recipe trains at 176 and tests at 224);
            None: ``image_size``.
        augment: the training augmentation preset: ``'imagenet'`` (random-resized crop, flip, colour jitter,
            PCA lighting: the paper's), ``'cifar'`` (pad-and-crop, flip), ``'shift'`` (pad-and-crop, no flip:
            digits), ``'none'`` (resize only); None: the dataset's own (image files: ``'cifar'`` up to 64 px,
            else ``'imagenet'``).
        auto_augment: a learned augmentation policy after crop and flip: ``'autoaugment'`` (the preset's
            policy: ImageNet's, or CIFAR-10's for the pad-and-crop presets), ``'randaugment'``,
            ``'trivialaugment'``; None: off.
        color_jitter: brightness/contrast/saturation jitter of the ``'imagenet'`` preset (None: the paper's 0.4; 0: off).
        pca_lighting: std of its AlexNet PCA lighting noise (None: the paper's 0.1; 0: off).
        crop_scale: (min, max) fraction of the image's area its random-resized crop keeps (None: the paper's
            (0.08, 1.0)); short budgets learn faster from larger crops (fast.ai's Imagenette runs use 0.35).
        pin_memory: page-locked host batches, so host-to-GPU copies can be non-blocking.
        split_seed: seed of the held-out validation split and of the training subset, fixed so every run
            of an ablation sees the same images.
        max_per_class: train on at most this many images per class (a seeded, stratified subset; validation
            and test stay whole), for budgets and few-shot studies; None: all.
        repeated_aug: each training image this many times per epoch, each copy with its own augmentation
            (repeated augmentation, Hoffer et al. 2020; DeiT uses 3): an epoch keeps its length and sees
            1/repeated_aug as many distinct images. 1: off.
        cache: ``'none'`` decodes every image every epoch; ``'memory'`` or ``'disk'`` decode each image once,
            shorter side resized to ``cache_side``, into uint8 tensors in RAM or a memmap file (about
            N x 1.33 x 3 x cache_side^2 bytes: 0.8 GB for Imagenette's 160px train set at 128 px).
        cache_side: shorter side stored in the cache; default the evaluation resize (``test_image_size / 0.875``
            for the ImageNet preset, ``test_image_size`` for the others), at least ``image_size``, never
            more than the image has. Random crops then come from that resolution.
        cache_dir: folder of the disk cache; None: ``root/.cache``, or ``~/.cache/bagoftricks`` when ``root``
            is read-only (shared clusters).
        skip_corrupt: skip unreadable images (counted in one warning) instead of stopping at the first.
    """

    source_type: ClassVar[type[Source] | None] = None  # set by each binding
    train_set: Dataset
    val_set: Dataset
    test_set: Dataset

    def __init__(
        self,
        source: Source,
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        image_size: int | None = None,
        test_image_size: int | None = None,
        augment: Augment | None = None,
        auto_augment: AutoAugment | None = None,
        color_jitter: float | None = None,
        pca_lighting: float | None = None,
        crop_scale: tuple[float, float] | None = None,
        pin_memory: bool = True,
        split_seed: int = 0,
        max_per_class: int | None = None,
        repeated_aug: int = 1,
        cache: CacheMode = "none",
        cache_side: int | None = None,
        cache_dir: str | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__()
        self.source = source
        check_int("batch_size", batch_size, 1)
        if num_workers is not None:
            check_int("num_workers", num_workers, 0)
        image_size = source.native_size if image_size is None else image_size
        check_int("image_size", image_size, MIN_IMAGE_SIZE, " pixels")
        if test_image_size is not None:
            check_int("test_image_size", test_image_size, MIN_IMAGE_SIZE, " pixels (or null for data.image_size)")
        test_image_size = test_image_size or image_size
        if max_per_class is not None:
            check_int("max_per_class", max_per_class, 1, " (or null for every image)")
        check_int("repeated_aug", repeated_aug, 1, " (1 = off; DeiT uses 3)")
        check_int("split_seed", split_seed, 0)
        if split_seed >= 2**63:  # torch.Generator's range
            raise ConfigError(f"data.split_seed must be below 2**63, got {split_seed}.")
        check_batch_fits(batch_size, image_size, test_image_size)
        augment = augment or source.augment or default_preset(image_size)
        check_choice("augment", augment, AUGMENT_PRESETS, " or null for the dataset's own")
        if auto_augment is not None:
            check_choice("auto_augment", auto_augment, AUTO_AUGMENTS, " or null")
        for key, value in (("color_jitter", color_jitter), ("pca_lighting", pca_lighting)):
            if value is not None and not value >= 0:
                raise ConfigError(f"data.{key} must be at least 0 (0 switches it off), got {value}.")
        if crop_scale is not None and not (len(crop_scale) == 2 and 0 < crop_scale[0] <= crop_scale[1] <= 1):
            raise ConfigError(f"data.crop_scale must be [min, max] with 0 < min <= max <= 1, got {list(crop_scale)}.")
        for key, value in (("color_jitter", color_jitter), ("pca_lighting", pca_lighting), ("crop_scale", crop_scale)):
            if value and augment != "imagenet":
                raise ConfigError(f"data.{key} belongs to data.augment 'imagenet', not {augment!r}: set that preset or leave it null.")
        check_choice("cache", cache, CACHE_MODES)
        if source.in_memory and (cache != "none" or cache_side or cache_dir or skip_corrupt):
            raise ConfigError(f"{source.name} is decoded in memory already: leave data.cache, cache_side, cache_dir and skip_corrupt unset.")
        if cache_side is not None:
            check_int("cache_side", cache_side, image_size, " (the image size)")

        self.batch_size, self.image_size, self.test_image_size = batch_size, image_size, test_image_size
        self.num_workers = num_workers if num_workers is not None else 0 if source.in_memory else default_num_workers()
        self.augment, self.auto_augment, self.color_jitter, self.pca_lighting = augment, auto_augment, color_jitter, pca_lighting
        self.crop_scale = crop_scale
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.split_seed, self.max_per_class, self.repeated_aug = split_seed, max_per_class, repeated_aug
        self.cache, self.cache_dir, self.skip_corrupt = cache, cache_dir, skip_corrupt
        # The size evaluation resizes to, so evaluating from the cache equals evaluating from the file
        # (training crops never come from fewer pixels than they keep).
        eval_side = resize_side(test_image_size) if augment == "imagenet" else test_image_size
        self.cache_side = cache_side or max(image_size, eval_side)
        self.train_tf, self.eval_tf = preset_transforms(
            augment, image_size, test_image_size=test_image_size, auto_augment=auto_augment, color_jitter=color_jitter,
            pca_lighting=pca_lighting, crop_scale=crop_scale, mean=source.mean, std=source.std,
            stored_side=source.stored_side(image_size),
        )  # fmt: skip

    def __init_subclass__(cls, source: type[Source] | None = None, **kwargs) -> None:
        """``class XDataModule(ImageDataModule, source=X)``: a constructor taking X's keys and the shared ones."""
        super().__init_subclass__(**kwargs)
        if source is not None:
            cls.source_type = source
            cls.__init__ = _binding_init(source)
            cls.__doc__ = _binding_doc(cls, source)

    def __getattr__(self, name: str):
        # The source's keys read as the module's own (dm.root, dm.size); only called for a missing attribute.
        source = self.__dict__.get("source")
        if source is None or name.startswith("_"):
            raise AttributeError(name)
        try:
            return getattr(source, name)
        except AttributeError:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}") from None

    @property
    def num_classes(self) -> int:
        """Known before ``setup`` (the CLI links it to the model at instantiation); from the source."""
        return self.source.num_classes

    # --- Lightning hooks -------------------------------------------------------------------------

    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_set"):
            self._build_splits()
        for name in STAGE_SPLITS.get(stage, ("train", "val", "test")):
            dataset = getattr(self, f"{name}_set")
            if id(dataset) not in self._prepared:
                self._prepare_split(dataset, name)
                self._prepared.add(id(dataset))

    def _build_splits(self) -> None:
        splits = self.source.read(image_size=self.image_size, split_seed=self.split_seed)
        self.classes = splits.classes
        train = splits.train
        if len(train) == 0:
            raise ConfigError(f"{self.source.name} has no training images: add some, or point data.root at the dataset.")
        if self.max_per_class is not None:
            train = train.take(cap_per_class(train.labels, self.max_per_class, self.split_seed))
        self._prepared: set[int] = set()
        self.train_set = self._dataset(train, self.train_tf)
        self.val_set = self._dataset(splits.val, self.eval_tf)
        # No official evaluation split: test is validation, so nothing is evaluated twice.
        self.test_set = self.val_set if splits.test is None or splits.test is splits.val else self._dataset(splits.test, self.eval_tf)

    def _dataset(self, split: Split, transform) -> Dataset:
        if isinstance(split.images, torch.Tensor):
            return TensorImageDataset(split.images, split.labels, transform)
        return ImageFileDataset(list(zip(split.images, split.labels.tolist())), transform, skip_corrupt=self.skip_corrupt)

    def _prepare_split(self, dataset: Dataset, name: str) -> None:
        """Fill a split's cache (only for the stages that run), or find its unreadable files."""
        if isinstance(dataset, ImageFileDataset):
            folder = disk_cache_folder(Path(self.source.root), self.cache_dir) if self.cache == "disk" else None
            cache_file = folder / f"{self.source.cache_name}-{name}" if folder else None
            dataset.prepare(self.cache, side=self.cache_side, num_workers=self.num_workers, cache_file=cache_file)

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


def check_batch_fits(batch_size: int, image_size: int, test_image_size: int) -> None:
    """One sentence, before anything is read, for an image size whose batches the memory cannot hold."""
    key, side = ("test_image_size", test_image_size) if test_image_size > image_size else ("image_size", image_size)
    need, have = batch_size * 3 * side * side * 4, available_memory()  # float32 pixels
    if 2 * need > have:
        raise ConfigError(
            f"data.{key} {side} makes one batch of {batch_size} images {gigabytes(need)} of float32 pixels, more than "
            f"half the {gigabytes(have)} of memory available: lower data.{key} or data.batch_size."
        )


# --------------------------------------------------------------------------------------- bindings


def _binding_parameters(source: type[Source]) -> list[inspect.Parameter]:
    """The source's keys (``root`` first, may be positional), the shared ones, then ``download``/``md5``."""
    hints = typing.get_type_hints(source)
    own = [f for f in fields(source) if f.name not in ("download", "md5")]
    downloading = [f for f in fields(source) if f.name in ("download", "md5")]
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for f in sorted(own, key=lambda f: f.name != "root"):
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if f.name == "root" else inspect.Parameter.KEYWORD_ONLY
        params.append(inspect.Parameter(f.name, kind, default=f.default, annotation=hints[f.name]))
    shared = list(inspect.signature(ImageDataModule.__init__, eval_str=True).parameters.values())[2:]
    params += [p for p in shared if not (source.in_memory and p.name in CACHE_KEYS)]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]) for f in downloading]
    return params


def _binding_init(source: type[Source]):
    signature = inspect.Signature(_binding_parameters(source))
    own = {f.name for f in fields(source)}

    def __init__(self, *args, **kwargs) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        del values["self"]
        ImageDataModule.__init__(self, source(**{k: values.pop(k) for k in own}), **values)

    __init__.__signature__ = signature
    __init__.__annotations__ = {p.name: p.annotation for p in list(signature.parameters.values())[1:]}
    __init__.__qualname__ = f"{source.__name__}DataModule.__init__"
    return __init__


def _args(doc: str | None) -> dict[str, str]:
    """``{name: text}`` of a Google-style docstring's ``Args:`` section."""
    section = re.split(r"\n\s*Args:\n", inspect.cleandoc(doc or ""), maxsplit=1)
    entries = re.findall(r"^    (\w+): (.*(?:\n {8}.*)*)", section[1] if len(section) > 1 else "", re.MULTILINE)
    return {name: re.sub(r"\s+", " ", text) for name, text in entries}


def _binding_doc(cls, source: type[Source]) -> str:
    """The binding's docstring, then one ``Args:`` entry per constructor parameter, from where it is defined."""
    texts = {**_args(ImageDataModule.__doc__), **_args(Downloadable.__doc__)}
    for part in reversed(source.__mro__):
        texts.update(_args(part.__doc__))
    lines = [inspect.cleandoc(cls.__doc__ or source.__doc__ or "").split("\nArgs:")[0].rstrip(), "", "Args:"]
    for name in list(inspect.signature(cls.__init__).parameters)[1:]:
        lines.append(f"    {name}: {texts.get(name, '')}")
    return "\n".join(lines)
