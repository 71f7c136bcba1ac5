"""A resumable, rank-sharded sampler for exact mid-epoch resume with ``StatefulDataLoader``.

The order of epoch e is a pure function of ``(seed, e)``. The sampler's ``state_dict`` holds
``{epoch, yielded}``; after ``load_state_dict`` the next iteration skips the part of epoch e that was
already yielded. ``StatefulDataLoader`` saves and restores it with the loader state, and Lightning
calls ``set_epoch`` at each epoch start, so both the rest of the interrupted epoch and every later
epoch match an uninterrupted run bit for bit.

Written by hand because torch's ``DistributedSampler`` has no state and torchdata's
``StatefulDistributedSampler`` changes the next epoch's order after a resume (see DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Shuffled (or sequential) indices for one rank, reproducible from ``(seed, epoch)``.

    Like ``DistributedSampler(drop_last=False)``, the order is padded by wrapping around so every rank
    sees ``ceil(n / world_size)`` indices; rank r takes positions r, r + world_size, ...
    """

    def __init__(
        self, num_samples: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1
    ):
        if num_samples < 1:
            raise ValueError("ResumableSampler needs at least one sample")
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.yielded = 0
        self._skip = 0

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        """This rank's full index order for ``epoch``."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            idx = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            idx = list(range(self.num_samples))
        total = len(self) * self.world_size
        idx += idx[: total - len(idx)] if total > len(idx) else []
        while len(idx) < total:  # tiny datasets with more ranks than samples
            idx += idx[: total - len(idx)]
        return idx[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        start, self._skip = self._skip, 0
        self.yielded = start
        for i in self.order(self.epoch)[start:]:
            self.yielded += 1
            yield i

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.yielded = self._skip = int(state["yielded"])
