"""Every data.* setting a config may use reaches the dataset it is given to. The data modules are composed (each
declares only its own keys and hands the shared ones on), so a slip in the forwarding would drop a user's setting
silently: each dataset is built from the CLI, as a config builds it, on its session miniature, and its batches
are checked."""

from __future__ import annotations

import pytest
import torch
from jsonargparse import ArgumentParser

import bagoftricks.data as data
from bagoftricks.cli import cli_main
from bagoftricks.data.base import ImageDataModule
from bagoftricks.errors import ConfigError

SHARED = ["batch_size", "num_workers", "image_size", "pin_memory", "split_seed", "max_per_class"]
FILES = ["root", "val_fraction", "augment", "auto_augment", "color_jitter", "pca_lighting", "cache", "cache_side", "skip_corrupt"]
# Every data.* key each dataset accepted before the data modules were composed, plus the new ones.
KEYS = {
    data.DigitsDataModule: [*SHARED, "val_fraction", "test_fraction", "augment"],
    data.ImagenetteDataModule: [*SHARED, *FILES, "size", "noisy_labels", "download", "md5"],
    data.ImagewoofDataModule: [*SHARED, *FILES, "size", "noisy_labels", "download", "md5"],
    data.CUB200DataModule: [*SHARED, *FILES, "download", "md5"],
    data.CIFAR100DataModule: [*SHARED, "root", "download", "md5", "coarse", "val_size", "auto_augment"],
    data.CIFAR10DataModule: [*SHARED, "root", "download", "md5", "val_size", "auto_augment"],
    data.ImageFolderDataModule: [*SHARED, *FILES],
}
# data class -> (its session miniature in conftest.py, what the miniature's size needs)
MINIATURES = {
    data.DigitsDataModule: (None, []),
    data.ImagenetteDataModule: ("imagenette_root", []),
    data.ImagewoofDataModule: ("imagewoof_root", []),
    data.CUB200DataModule: ("cub200_root", ["--data.val_fraction", "0.5"]),
    data.CIFAR100DataModule: ("cifar100_root", ["--data.val_size", "0"]),  # validate on test, as base.yaml does
    data.CIFAR10DataModule: ("cifar10_root", ["--data.val_size", "20"]),
    data.ImageFolderDataModule: ("image_folder_root", []),
}


def cli_keys(cls) -> set[str]:
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    return set(vars(parser.get_defaults().data))


@pytest.mark.parametrize("cls", KEYS, ids=lambda c: c.__name__)
def test_every_cli_key_is_kept(cls):
    """A user's config that sets any of these keys still parses."""
    assert set(KEYS[cls]) <= cli_keys(cls)
    assert ("root" in cli_keys(cls)) == (cls is not data.DigitsDataModule)
    assert issubclass(cls, ImageDataModule)


@pytest.mark.parametrize("cls", MINIATURES, ids=lambda c: c.__name__)
def test_shared_settings_reach_every_datasets_batches(cls, request):
    """batch_size, image_size, test_image_size and max_per_class, given on the command line, shape the batches;
    the class count links to the model."""
    fixture, extra = MINIATURES[cls]
    argv = ["--data", cls.__name__, "--data.batch_size", "3", "--data.image_size", "24", "--data.test_image_size", "20",
            "--data.max_per_class", "2", "--data.num_workers", "0", *extra, "--trainer.logger", "false"]  # fmt: skip
    if fixture is not None:
        argv += ["--data.root", str(request.getfixturevalue(fixture))]
    cli = cli_main(argv, run=False)
    datamodule = cli.datamodule
    assert type(datamodule) is cls and cli.model.hparams.num_classes == datamodule.num_classes
    datamodule.prepare_data()
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (3, 3, 24, 24) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert next(iter(datamodule.val_dataloader()))[0].shape[1:] == (3, 20, 20)
    train_labels = torch.cat([labels for _, labels in datamodule.train_dataloader()])
    assert 0 < train_labels.bincount().max() <= 2 and int(train_labels.max()) < datamodule.num_classes


def test_batch_size_zero_is_one_sentence_from_the_cli():
    """A plain int reaches the constructor (no union-type dump from the parser), which refuses it in one sentence.

    jsonargparse wraps errors raised while instantiating the optional ``data`` group in its own
    ValueError, raised ``from`` the original: the CLI's entry point prints that cause.
    """
    with pytest.raises(ValueError) as info:
        cli_main(["--data", "DigitsDataModule", "--data.batch_size", "0", "--trainer.logger", "false"], run=False)
    cause = info.value if isinstance(info.value, ConfigError) else info.value.__cause__
    assert isinstance(cause, ConfigError)
    assert str(cause) == "data.batch_size must be a whole number of at least 1, got 0."
