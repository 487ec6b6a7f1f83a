"""Which data indices each process reads in each epoch: a seeded shuffle per epoch, one shard per rank,
and a start offset, so that a resumed run continues in the middle of an epoch exactly where it stopped."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShardSampler(Sampler[int]):
    """Indices of a data set of `dataset_size` items for process `rank` of `world_size`.

    Epoch e permutes all indices with a generator seeded by (seed, e); rank r takes every world_size-th
    index starting at r, after trimming (drop_last) or wrapping (padding) the permutation to a multiple of
    world_size. `set_epoch(epoch, start=k)` skips this rank's first k indices of that epoch.
    """

    def __init__(
        self,
        dataset_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        if dataset_size <= 0:
            raise ValueError("the data set is empty")
        self.dataset_size = dataset_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    @property
    def shard_size(self) -> int:
        """Indices per rank per epoch."""
        if self.drop_last:
            return self.dataset_size // self.world_size
        return -(-self.dataset_size // self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def epoch_indices(self) -> list[int]:
        """This rank's full shard for the current epoch, in reading order."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.dataset_size, generator=generator).tolist()
        else:
            order = list(range(self.dataset_size))
        total = self.shard_size * self.world_size
        if total > len(order):
            order = (order * (-(-total // len(order))))[:total]
        return order[:total][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start :])

    def __len__(self) -> int:
        return max(self.shard_size - self.start, 0)
