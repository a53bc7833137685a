"""Every dataset's shipped base config, fast-dev-run on a miniature in the dataset's genuine layout."""

from __future__ import annotations

import pytest

from conftest import EXPERIMENTS, TINY, fit
from miniatures import make_cifar100, make_cub200, make_imagenette

from bagoftricks import data

# Tiny inputs so a ResNet-50 step fits a 2-core CI; everything else is the shipped recipe.
SMALL = [*TINY, "--data.batch_size", "2", "--data.num_workers", "0"]
CASES = {
    "imagenette": (["imagenette"], lambda root: make_imagenette(root, "imagenette2-160"), ["--data.image_size", "32"], data.ImagenetteDataModule),
    "imagewoof": (["imagenette", "imagewoof"], lambda root: make_imagenette(root, "imagewoof2-160"), ["--data.image_size", "32"], data.ImagewoofDataModule),
    "cifar100": (["cifar100"], make_cifar100, [], data.CIFAR100DataModule),
    # No network in tests: the ImageNet weights the recipe names are replaced by a random init.
    "cub200": (["cub200"], make_cub200, ["--data.image_size", "32", "--data.val_fraction", "0.5", "--model.pretrained", "null"], data.CUB200DataModule),
}


@pytest.mark.parametrize("dataset", CASES)
def test_dataset_base_fast_dev_run(tmp_path, dataset):
    folders, make, extra, datamodule = CASES[dataset]
    root = make(tmp_path / "data")
    configs = [arg for folder in folders for arg in ("-c", str(EXPERIMENTS / folder / "base.yaml"))]
    cli = fit(tmp_path, *configs, "--data.root", str(root), *SMALL, *extra, "--trainer.fast_dev_run", "1")
    assert cli.trainer.state.finished
    assert type(cli.datamodule) is datamodule
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes
