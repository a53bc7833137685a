"""Your own image folders, CIFAR-10's genuine pickles, held-out validation and training subsets, on generated miniatures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from miniatures import CIFAR10_NAMES, make_cifar10, make_cub200, make_image_folder, make_imagenette, write_image
from PIL import Image

from bagoftricks.data import (
    CIFAR10DataModule,
    CUB200DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    ImagenetteDataModule,
)

FOLDER = {"batch_size": 2, "num_workers": 0}


def labels_of(dataset) -> list[int]:
    return [label for _, label in dataset.samples] if hasattr(dataset, "samples") else dataset.labels.tolist()


def paths_of(dataset) -> set[str]:
    return {path for path, _ in dataset.samples}


def test_classes_sorted_nested_any_case_other_files_ignored(tmp_path):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for c, name in enumerate(["zebra", "Aardvark", "moose"]):  # sorted: Aardvark, moose, zebra
        write_image(root / "train" / name / "a.jpg", c, (40, 30), rng)
        write_image(root / "train" / name / "deep" / "er" / "b.JPEG", c, (30, 40), rng)
        Image.new("RGB", (20, 20), (c * 80, 0, 0)).save(root / "train" / name / "c.PNG")
        (root / "train" / name / "notes.txt").write_text("not an image")
        (root / "train" / name / ".hidden").mkdir()
        write_image(root / "train" / name / ".hidden" / "d.jpg", c, (20, 20), rng)
    (root / "train" / "README.md").write_text("a file beside the class folders")
    dm = ImageFolderDataModule(str(root), **FOLDER)
    assert dm.num_classes == 3  # known before setup, for the CLI link
    dm.setup("fit")
    assert dm.classes == ["Aardvark", "moose", "zebra"]
    samples = dm.train_set.samples + dm.val_set.samples
    assert len(dm.train_set) == 6 and len(dm.val_set) == 3  # a small class still gives validation one image
    assert sorted(Path(p).name for p, _ in samples) == sorted(["a.jpg", "b.JPEG", "c.PNG"] * 3)
    assert all(dm.classes[label] == Path(p).relative_to(root / "train").parts[0] for p, label in samples)
    assert dm.test_set is dm.val_set  # no test/ folder: nothing is evaluated twice
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 224, 224) and y.dtype == torch.int64


def test_held_out_split_is_stratified_disjoint_and_seeded(tmp_path):
    root = make_image_folder(tmp_path / "data", classes=("a", "b", "c", "d"), per_class=10, test_per_class=1, side=16)
    modules = [ImageFolderDataModule(str(root), val_fraction=0.3, split_seed=s, **FOLDER) for s in (0, 0, 1)]
    for dm in modules:
        dm.setup("fit")
    first = modules[0]
    assert not paths_of(first.train_set) & paths_of(first.val_set)
    assert len(paths_of(first.train_set) | paths_of(first.val_set)) == 40
    assert sorted(labels_of(first.val_set)) == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3  # proportions kept
    assert paths_of(first.val_set) == paths_of(modules[1].val_set)
    assert paths_of(first.val_set) != paths_of(modules[2].val_set)
    assert sorted(Path(p).parent.parent.name for p in paths_of(first.test_set)) == ["test"] * 4  # official split is test


def test_val_folder_is_validation_and_val_fraction_zero_validates_on_test(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=4, test_per_class=2)
    shutil.copytree(root / "test", root / "val")
    with_val = ImageFolderDataModule(str(root), **FOLDER)
    with_val.setup("fit")
    assert len(with_val.train_set) == 12 and {Path(p).parts[-3] for p in paths_of(with_val.val_set)} == {"val"}
    shutil.rmtree(root / "val")
    leaderboard = ImageFolderDataModule(str(root), val_fraction=0, **FOLDER)
    leaderboard.setup("fit")
    assert leaderboard.val_set is leaderboard.test_set and len(leaderboard.train_set) == 12


def test_small_images_get_the_cifar_preset_large_ones_imagenet(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=2, test_per_class=1, side=40)
    small = ImageFolderDataModule(str(root), image_size=32, val_fraction=0, **FOLDER)
    large = ImageFolderDataModule(str(root), image_size=96, val_fraction=0, **FOLDER)
    assert (small.augment, large.augment) == ("cifar", "imagenet")
    assert type(small.train_tf.transforms[1]).__name__ == "RandomCrop" and small.train_tf.transforms[1].padding == [4, 4, 4, 4]
    assert type(large.train_tf.transforms[0]).__name__ == "FastRandomResizedCrop"
    small.setup("fit")
    x, _ = next(iter(small.val_dataloader()))
    assert x.shape == (2, 3, 32, 32)


def test_cifar10_genuine_pickles_read_with_right_labels(tmp_path):
    root = make_cifar10(tmp_path, per_batch=20, n_test=20)
    dm = CIFAR10DataModule(str(root), val_size=0, **FOLDER)
    dm.setup("fit")
    assert dm.classes == CIFAR10_NAMES and dm.num_classes == 10
    assert dm.train_set.labels.tolist() == [i % 10 for i in range(100)]  # batches 1..5 in order
    assert dm.test_set.labels.tolist() == [i % 10 for i in range(20)]
    # Each row is channel-major: the first 1024 bytes are red. The fixture colours image i by its label.
    red = dm.train_set.images[:, 0].float().mean(dim=(1, 2))
    expected = torch.tensor([(label * 67) % 256 for label in dm.train_set.labels.tolist()], dtype=torch.float32)
    assert (red - expected).abs().max() < 12
    held_out = CIFAR10DataModule(str(root), val_size=20, **FOLDER)
    held_out.setup("fit")
    assert sorted(held_out.val_set.labels.tolist()) == sorted(list(range(10)) * 2) and len(held_out.train_set) == 80


# --- the training subset, on every data module ---------------------------------------------------


def _imagenette(root, **kw):
    make_imagenette(root, "imagenette2-160", per_class=4, side=24)
    return ImagenetteDataModule(str(root), image_size=16, **FOLDER, **kw)


MODULES = {
    "digits": lambda root, **kw: DigitsDataModule(**FOLDER, **kw),
    "folder": lambda root, **kw: ImageFolderDataModule(str(make_image_folder(root, per_class=8, side=16)), **FOLDER, **kw),
    "cifar10": lambda root, **kw: CIFAR10DataModule(str(make_cifar10(root)), val_size=10, **FOLDER, **kw),
    "imagenette": _imagenette,
    "cub200": lambda root, **kw: CUB200DataModule(
        str(make_cub200(root, per_class=8, train_per_class=6)), image_size=16, **FOLDER, **kw
    ),
}


@pytest.mark.parametrize("name", MODULES)
def test_max_per_class_caps_training_only_seeded(name, tmp_path):
    whole = MODULES[name](tmp_path / "a")
    whole.setup("fit")
    capped = []
    for folder in ("b", "c"):
        dm = MODULES[name](tmp_path / folder, max_per_class=2)
        dm.setup("fit")
        capped.append(dm)
    counts = torch.bincount(torch.tensor(labels_of(capped[0].train_set)))
    assert counts.max() == 2 and (counts[counts > 0] == 2).all()
    assert len(capped[0].val_set) == len(whole.val_set)  # validation and test stay whole
    assert labels_of(capped[0].val_set) == labels_of(whole.val_set)
    assert labels_of(capped[0].train_set) == labels_of(capped[1].train_set)


def test_max_per_class_from_the_constructor_and_the_split_seed(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=8, side=16)
    picks = []
    for seed in (0, 0, 1):
        dm = ImageFolderDataModule(str(root), max_per_class=3, split_seed=seed, **FOLDER)
        dm.setup("fit")
        picks.append(paths_of(dm.train_set))
    assert len(picks[0]) == 9 and picks[0] == picks[1] and picks[0] != picks[2]


def test_digits_split_is_unchanged():
    """The digits' published tables were measured on this split (1,797 images, 15% + 15% per class)."""
    dm = DigitsDataModule()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (1259, 269, 269)
    assert dm.num_workers == 0 and dm.image_size == 32


# --- test resolution (FixRes) ---------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_test_image_size_evaluates_at_its_own_resolution(tmp_path, cache):
    """Train crops at image_size; validation and test resize the file's shorter side to
    test_image_size / 0.875 and center-crop test_image_size (torchvision's reference ops), from the
    file or from the cache alike."""
    from torchvision import transforms as T

    root = make_image_folder(tmp_path / "data", per_class=2, test_per_class=1, side=120)
    dm = ImageFolderDataModule(str(root), image_size=72, test_image_size=96, augment="imagenet", val_fraction=0, cache=cache, **FOLDER)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))[0].shape == (2, 3, 72, 72)
    x, _ = next(iter(dm.val_dataloader()))
    reference = T.Compose([T.Resize(110), T.CenterCrop(96), T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    expected = torch.stack([reference(Image.open(path).convert("RGB")) for path, _ in dm.val_set.samples[:2]])
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "make",
    [lambda root, **kw: DigitsDataModule(**FOLDER, **kw), lambda root, **kw: CIFAR10DataModule(str(make_cifar10(root)), val_size=10, **FOLDER, **kw)],
    ids=["digits", "cifar10"],
)
def test_tensor_datasets_evaluate_at_test_image_size(tmp_path, make):
    dm = make(tmp_path, test_image_size=40)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))[0].shape[-2:] == (32, 32)
    assert next(iter(dm.val_dataloader()))[0].shape[-2:] == (40, 40)
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))[0].shape[-2:] == (40, 40)
