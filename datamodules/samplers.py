"""Samplers whose order depends only on a seed and the epoch, so resumed runs see the same batches."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import RandomSampler


class EpochSeededRandomSampler(RandomSampler):
    """A random permutation drawn from ``seed + epoch``.

    Lightning calls ``set_epoch`` at the start of every training epoch, so an interrupted and
    resumed run draws the same order as an uninterrupted one. Under DDP Lightning replaces
    this sampler (a ``RandomSampler``) by a shuffling ``DistributedSampler``, which is seeded
    the same way.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()
