"""Repeated augmentation sampler (Hoffer et al. 2020, "Augment your batch", CVPR; Berman et al. 2019).

torchvision ships it only in its training references, not in the package, hence this copy.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


class RASampler(DistributedSampler):
    """Each image `repetitions` times per epoch, the copies spread over consecutive ranks, so each
    copy gets its own augmentation and the batch (per GPU or across GPUs) sees the image several
    times; an epoch still yields len(dataset) / num_replicas indices per rank.

    The order is torchvision's `references/classification/sampler.py` RASampler: shuffle with
    seed + epoch, repeat each index in place, pad to a multiple of num_replicas, take every
    num_replicas-th from `rank`. One change: torchvision also rounds the epoch down to a
    multiple of 256 images, which leaves a dataset of under 256 images with no batch at all;
    here the loader's `drop_last` does any rounding.

    A subclass of DistributedSampler so that Lightning under DDP leaves it as it is (it wraps
    any other sampler in a second distributed one) and calls `set_epoch` every epoch.
    `num_replicas` and `rank` default to the process group's, or 1 and 0 without one.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        repetitions: int = 3,
    ) -> None:
        if isinstance(repetitions, bool) or not isinstance(repetitions, int) or repetitions < 1:
            raise ValueError(f"repetitions must be a positive integer, got {repetitions!r}.")
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.repetitions = repetitions
        self.num_samples = math.ceil(len(dataset) * repetitions / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.num_selected_samples = len(dataset) // num_replicas

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            indices = list(range(len(self.dataset)))
        indices = [index for index in indices for _ in range(self.repetitions)]
        indices += indices[: self.total_size - len(indices)]  # every rank gets as many
        indices = indices[self.rank : self.total_size : self.num_replicas]
        return iter(indices[: self.num_selected_samples])

    def __len__(self) -> int:
        return self.num_selected_samples
