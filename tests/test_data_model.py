"""One data model (issue 26): each public data module is a binding of one Source to ImageDataModule that
shows every key with its type and default, each key means one thing everywhere, and the CLI sees them all."""

from __future__ import annotations

import inspect
import typing

import pytest
import torch
from jsonargparse import ArgumentParser
from miniatures import make_image_folder

import bagoftricks.data as data
from bagoftricks.data import ImageDataModule
from bagoftricks.data.transforms import auto_augment_transform, preset_transforms
from bagoftricks.errors import ConfigError

MODULES = [getattr(data, name) for name in data.__all__ if name.endswith("DataModule") and name != "ImageDataModule"]
SHARED = ["batch_size", "num_workers", "image_size", "test_image_size", "augment", "auto_augment", "color_jitter",
          "pca_lighting", "crop_scale", "pin_memory", "split_seed", "max_per_class", "repeated_aug"]  # fmt: skip
CACHE = ["cache", "cache_side", "cache_dir", "skip_corrupt"]
DOWNLOAD = ["download", "md5"]
# Every data.* key each module takes: its own, then the shared ones, then caching for image files and
# downloading for the datasets that come as an archive.
KEYS = {
    data.DigitsDataModule: ["val_fraction", "test_fraction", *SHARED],
    data.CIFAR10DataModule: ["root", "val_size", *SHARED, *DOWNLOAD],
    data.CIFAR100DataModule: ["root", "val_size", "coarse", *SHARED, *DOWNLOAD],
    data.ImageFolderDataModule: ["root", "val_fraction", *SHARED, *CACHE],
    data.CUB200DataModule: ["root", "val_fraction", *SHARED, *CACHE, *DOWNLOAD],
    data.ImagenetteDataModule: ["root", "size", "folder", "noisy_labels", "val_fraction", *SHARED, *CACHE, *DOWNLOAD],
    data.ImagewoofDataModule: ["root", "size", "folder", "noisy_labels", "val_fraction", *SHARED, *CACHE, *DOWNLOAD],
}


def parameters(cls) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(cls).parameters)


def test_every_public_module_is_listed():
    assert set(MODULES) == set(KEYS)


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_signature_shows_every_key_with_type_and_default(cls):
    params = parameters(cls)
    assert list(params) == KEYS[cls]
    for name, p in params.items():
        assert p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.annotation is not p.empty, name
        assert p.default is not p.empty, name  # every key has a default: a config names only what differs
        assert (p.kind is p.POSITIONAL_OR_KEYWORD) == (name == "root")
    doc = inspect.getdoc(cls)
    assert all(f"    {name}: " in doc and f"    {name}: \n" not in doc + "\n" for name in params), doc  # each key documented


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_two_levels_deep(cls):
    assert cls.__bases__ == (ImageDataModule,)
    assert cls.__mro__[2] is data.ImageDataModule.__mro__[1]  # ImageDataModule, then Lightning's own class


def test_each_key_has_one_type_and_default_across_modules():
    seen: dict[str, tuple] = {}
    for cls in MODULES:
        for name, p in parameters(cls).items():
            if name in ("root", "val_fraction"):  # every dataset's own: where it is, how much it holds out
                continue
            seen.setdefault(name, (p.annotation, p.default, cls))
            assert (p.annotation, p.default) == seen[name][:2], f"{name} differs in {cls.__name__} and {seen[name][2].__name__}"
    assert typing.get_args(seen["augment"][0])[0] == typing.Literal["imagenet", "cifar", "shift", "none"]
    assert typing.get_args(seen["auto_augment"][0])[0] == typing.Literal["autoaugment", "randaugment", "trivialaugment"]


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_the_cli_parser_sees_every_key(cls):
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    assert set(vars(parser.get_defaults().data)) == set(KEYS[cls])


@pytest.mark.parametrize(
    "make, preset",
    [
        (lambda root: data.DigitsDataModule(), "shift"),
        (lambda root: data.CIFAR10DataModule(str(root)), "cifar"),
        (lambda root: data.CIFAR100DataModule(str(root), coarse=True), "cifar"),
        (lambda root: data.ImageFolderDataModule(str(root), image_size=32), "cifar"),
        (lambda root: data.ImageFolderDataModule(str(root), image_size=96), "imagenet"),
        (lambda root: data.ImagenetteDataModule(str(root)), "imagenet"),
        (lambda root: data.CUB200DataModule(str(root), augment="none"), "none"),
    ],
)
def test_augment_names_a_preset_everywhere_and_num_classes_comes_from_the_source(make, preset, tmp_path):
    make_image_folder(tmp_path, classes=("a", "b"), per_class=1, test_per_class=0)
    dm = make(tmp_path)
    assert dm.augment == preset
    assert dm.num_classes == dm.source.num_classes and "num_classes" not in vars(dm)
    assert not isinstance(getattr(type(dm), "num_classes"), int)


def test_shift_is_pad_and_crop_without_the_flip_and_none_only_resizes():
    shift, _ = preset_transforms("shift", 16, stored_side=16)
    assert [type(t).__name__ for t in shift.transforms] == ["RandomCrop", "ToImage", "ScaleNormalize"]
    assert shift.transforms[0].padding == [2, 2, 2, 2]
    none, _ = preset_transforms("none", 16)
    assert [type(t).__name__ for t in none.transforms] == ["Resize", "CenterCrop", "ToImage", "ScaleNormalize"]


def test_digits_augment_none_serves_the_images_as_drawn():
    dm = data.DigitsDataModule(augment="none", image_size=16, batch_size=8)
    dm.setup("fit")
    image, _ = dm.train_set[0]
    again, _ = dm.train_set[0]
    assert torch.equal(image, again) and image.shape == (3, 16, 16)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: preset_transforms("autumn", 32), "augment must be one of"),
        (lambda: preset_transforms("cifar", 32, color_jitter=0.4), "color_jitter, pca_lighting and crop_scale belong to the 'imagenet' preset"),
        (lambda: preset_transforms("imagenet", 32, pca_lighting=-1), "pca_lighting must be at least 0"),
        (lambda: auto_augment_transform("best"), "auto_augment must be one of"),
    ],
)
def test_transform_functions_raise_plain_errors_in_their_own_words(call, error):
    with pytest.raises(ValueError, match=error) as info:
        call()
    assert not isinstance(info.value, ConfigError) and "data." not in str(info.value)


def test_downloading_belongs_to_the_datasets_with_an_archive(tmp_path):
    for cls in (data.ImageFolderDataModule, data.DigitsDataModule):
        with pytest.raises(TypeError, match="download"):
            cls(download=True)
    with pytest.raises(TypeError, match="cache"):
        data.CIFAR10DataModule(str(tmp_path), cache="memory")  # decoded in memory already


def test_source_keys_read_as_the_module_attributes(tmp_path):
    dm = data.ImagenetteDataModule(str(tmp_path), size="320px", noisy_labels=5)
    assert (dm.root, dm.size, dm.noisy_labels, dm.official_folder) == (str(tmp_path), "320px", 5, "imagenette2-320")
    with pytest.raises(AttributeError, match="no attribute 'sizes'"):
        dm.sizes  # noqa: B018
