"""Imagenette and Imagewoof read local copies as users keep them: an official folder, or one resized by hand.

The miniatures are written in the archives' own layout (``<name>/{train,val}/<wnid>/*.JPEG``); a
hand-resized copy such as ``imagenette2-96/`` has no noisy-label csv.
"""

from __future__ import annotations

import pytest
from miniatures import make_imagenette

from bagoftricks.data import ImagenetteDataModule, ImagewoofDataModule
from bagoftricks.errors import ConfigError, MissingDataError

PER_CLASS, VAL_PER_CLASS = 3, 2


def hand_resized(root, name: str, side: int):
    """A copy of ``name`` resized by hand: the archive's layout at ``side`` px, without the csv."""
    make_imagenette(root, name, per_class=PER_CLASS, val_per_class=VAL_PER_CLASS, side=side)
    (root / name / f"noisy_{name.split('2')[0]}.csv").unlink()
    return root


@pytest.mark.parametrize("module, name", [(ImagenetteDataModule, "imagenette2-96"), (ImagewoofDataModule, "imagewoof2-96")])
def test_a_hand_resized_copy_is_found_by_its_folder_and_read_at_its_own_size(module, name, tmp_path):
    hand_resized(tmp_path, name, side=24)
    dm = module(str(tmp_path), image_size=16, augment="imagenet", val_fraction=1 / 3, cache="memory", num_workers=0, batch_size=4)
    assert dm.archive.folder == name  # no data.folder, no 'size' of that name: the one copy under root
    dm.setup("fit")
    dm.setup("test")
    train, val, test = dm.train_dataloader().dataset, dm.val_dataloader().dataset, dm.test_dataloader().dataset
    assert (len(train), len(val), len(test)) == (10 * (PER_CLASS - 1), 10, 10 * VAL_PER_CLASS)  # test is the official val/
    assert sorted({label for _, label in test.samples}) == list(range(10))
    assert all(f"/{name}/val/" in path for path, _ in test.samples)
    assert not {path for path, _ in val.samples} & {path for path, _ in train.samples}  # validation held out of train/
    # The cache holds the shorter side the evaluation resizes to (16 / 0.875 = 18 px, down from 24), and
    # training crops come out at image_size.
    assert int(test.decoded.index[:, 1:].min()) == 18
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape[-2:] == (16, 16)


def test_crops_larger_than_the_images_warn_and_the_cache_keeps_the_real_size(tmp_path):
    hand_resized(tmp_path, "imagenette2-96", side=12)
    dm = ImagenetteDataModule(str(tmp_path), image_size=16, augment="imagenet", cache="memory", num_workers=0, val_fraction=0)
    with pytest.warns(UserWarning, match="data.image_size 16 is larger than the 12-px images"):
        dm.setup("test")
    assert int(dm.test_dataloader().dataset.decoded.index[:, 1:].min()) == 12  # not upsampled to 18


def test_the_official_folder_of_size_wins_and_several_copies_need_data_folder(tmp_path):
    make_imagenette(tmp_path, "imagenette2-160", per_class=1)
    hand_resized(tmp_path, "imagenette2-96", side=24)
    assert ImagenetteDataModule(str(tmp_path)).archive.folder == "imagenette2-160"
    assert ImagenetteDataModule(str(tmp_path), folder="imagenette2-96").archive.folder == "imagenette2-96"
    with pytest.raises(ConfigError, match="several copies of Imagenette \\(imagenette2-160, imagenette2-96\\).*--data.folder"):
        ImagenetteDataModule(str(tmp_path), size="320px").archive  # noqa: B018
    # Imagewoof does not pick up an Imagenette copy.
    with pytest.raises(MissingDataError, match="Imagewoof not found"):
        ImagewoofDataModule(str(tmp_path)).setup("fit")


def test_noisy_labels_without_the_csv_is_one_sentence(tmp_path):
    hand_resized(tmp_path, "imagenette2-96", side=24)
    dm = ImagenetteDataModule(str(tmp_path), image_size=16, noisy_labels=5, num_workers=0)
    with pytest.raises(MissingDataError, match="noisy_imagenette.csv is missing.*set data.noisy_labels 0"):
        dm.setup("fit")
    ImagenetteDataModule(str(tmp_path), image_size=16, num_workers=0).setup("fit")  # clean labels need no csv


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"folder": "../elsewhere"}, "data.folder must be the name of a folder inside data.root"),
        ({"folder": ""}, "data.folder must be the name of a folder inside data.root"),
        ({"folder": "imagenette2-96", "download": True}, "data.download fetches the official imagenette2-160.tgz"),
    ],
)
def test_impossible_folder_settings_are_refused(kwargs, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        ImagenetteDataModule(str(tmp_path), **kwargs)
