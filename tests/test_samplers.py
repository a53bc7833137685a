"""RASampler against torchvision's references/classification/sampler.py, written out here."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DistributedSampler

from bagoftricks.data import DigitsDataModule
from bagoftricks.data.samplers import RASampler
from bagoftricks.errors import ConfigError
from conftest import DIGITS_BASE, TINY, fit


def reference_indices(n, num_replicas, rank, shuffle, seed, epoch, repetitions):
    """torchvision references/classification/sampler.py RASampler (from DeiT), verbatim but for the class around it."""
    num_samples = int(math.ceil(n * float(repetitions) / num_replicas))
    total_size = num_samples * num_replicas
    num_selected_samples = int(math.floor(n // 256 * 256 / num_replicas))
    if shuffle:
        g = torch.Generator()
        g.manual_seed(seed + epoch)
        indices = torch.randperm(n, generator=g).tolist()
    else:
        indices = list(range(n))
    indices = [ele for ele in indices for i in range(repetitions)]
    indices += indices[: (total_size - len(indices))]
    assert len(indices) == total_size
    indices = indices[rank:total_size:num_replicas]
    assert len(indices) == num_samples
    return indices[:num_selected_samples]


@pytest.mark.parametrize("num_replicas", [1, 2, 3, 4])
@pytest.mark.parametrize(("shuffle", "repetitions"), [(True, 3), (True, 2), (False, 3)])
def test_matches_torchvision_reference(num_replicas, shuffle, repetitions):
    """Where torchvision's round-down to 256 images changes nothing (a multiple of 256 images)."""
    dataset = range(768)
    for epoch in (0, 1):
        for rank in range(num_replicas):
            sampler = RASampler(dataset, num_replicas, rank, shuffle=shuffle, seed=5, repetitions=repetitions)
            sampler.set_epoch(epoch)
            expected = reference_indices(768, num_replicas, rank, shuffle, 5, epoch, repetitions)
            assert list(sampler) == expected
            assert len(sampler) == len(expected)


def test_small_dataset_keeps_its_epoch():
    """100 images: torchvision's sampler yields nothing; this one 100 // replicas per rank, each image repeated."""
    assert reference_indices(100, 1, 0, True, 0, 0, 3) == []
    ranks = [list(RASampler(range(100), 2, rank, repetitions=3)) for rank in range(2)]
    assert [len(r) for r in ranks] == [50, 50]
    seen = Counter(ranks[0] + ranks[1])
    assert len(seen) == 34 and max(seen.values()) == 3  # a third as many images, most of them thrice


def test_copies_land_on_consecutive_ranks():
    """Under DDP the repeats of an image go to different GPUs in the same step (the point of RA)."""
    ranks = [list(RASampler(range(512), 3, rank, repetitions=3)) for rank in range(3)]
    assert all(a == b == c for a, b, c in zip(*ranks))


def test_epoch_changes_order_and_lightning_sees_a_distributed_sampler():
    sampler = RASampler(range(256), 1, 0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert isinstance(sampler, DistributedSampler)  # so Lightning does not wrap it in another one
    assert (sampler.num_replicas, sampler.rank) == (1, 0)  # no process group: one replica


@pytest.mark.parametrize(("kwargs", "message"), [(dict(repetitions=0), "repetitions must be a positive integer"), (dict(num_replicas=2, rank=2), "rank")])
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RASampler(range(10), **kwargs)


def test_repeated_aug_data_key_trains_on_each_image_three_times(tmp_path):
    """``data.repeated_aug: 3`` through the CLI: the training loader draws each image three times in
    a row with its own crop, keeps the epoch's length, and a fit runs."""
    cli = fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, "--data.repeated_aug", "3", "--seed_everything", "4",
              "--trainer.fast_dev_run", "1")  # fmt: skip
    loader = cli.datamodule.train_dataloader()
    assert isinstance(loader.sampler, RASampler) and loader.sampler.repetitions == 3
    assert loader.sampler.seed == 4  # the run's seed, the same on every rank
    indices = list(loader.sampler)
    assert len(indices) == len(cli.datamodule.train_set)
    assert all(indices[i] == indices[i + 1] == indices[i + 2] for i in range(0, len(indices) - 2, 3))
    images = [cli.datamodule.train_set[i][0] for i in indices[:3]]
    assert not torch.equal(images[0], images[1]) or not torch.equal(images[1], images[2])  # each copy its own crop


def test_repeated_aug_off_keeps_the_plain_shuffle():
    data = DigitsDataModule()
    data.setup("fit")
    assert not isinstance(data.train_dataloader().sampler, RASampler)


@pytest.mark.parametrize("value", [0, 1.5, True])
def test_repeated_aug_must_be_a_whole_number(value):
    with pytest.raises(ConfigError, match="data.repeated_aug must be a whole number of at least 1"):
        DigitsDataModule(repeated_aug=value)
