"""Batches planned from the sampler's order: a token budget per batch, or length-grouped batches.

The plan of epoch e is a pure function of the :class:`ResumableSampler`'s order of epoch e (itself a
function of ``(seed, e)``) and the examples' lengths, so a resumed run rebuilds the same batches; the
state is ``{epoch, batches}`` (batches already handed out this epoch), saved and restored by
``StatefulDataLoader`` like the sampler's.

- ``max_tokens``: examples are taken in the sampler's order into a batch until the next one would push
  the batch's cost past the budget; an example over the budget on its own is a batch of one. The cost
  is Σ lengths when the batch is packed, rows × longest row when padded.
- ``group_by_length``: the order is cut into mega-batches of ``GROUP_FACTOR × batch_size`` examples,
  each sorted by length (longest first) and cut into ``batch_size`` batches, so a batch holds rows of
  similar length and pads little (transformers' ``LengthGroupedSampler`` idea, made resumable).

Under several ranks, the batches of the whole order are planned once and dealt round-robin, padded by
wrapping around, so every rank runs the same number of steps (DDP and FSDP need that).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import Sampler

from datamodules.resumable_sampler import ResumableSampler

GROUP_FACTOR = 50


def cost(rows: Sequence[Sequence[int]], packed: bool) -> int:
    """What a batch of examples costs: Σ row lengths (packed) or rows × longest row (padded);
    ``rows[i]`` holds the lengths of the sequences example i contributes."""
    lengths = [n for ex in rows for n in ex]
    return sum(lengths) if packed else len(lengths) * max(lengths, default=0)


def budget_batches(
    order: Sequence[int], lengths: Sequence[Sequence[int]], max_tokens: int, packed: bool
) -> list[list[int]]:
    """Greedy token-budget batches over ``order`` (see the module docstring); :func:`cost`, kept
    incrementally."""
    batches: list[list[int]] = []
    current: list[int] = []
    total = rows = longest = 0
    for i in order:
        ls = lengths[i]
        grown = (total + sum(ls), rows + len(ls), max(longest, *ls))
        if current and (grown[0] if packed else grown[1] * grown[2]) > max_tokens:
            batches.append(current)
            current, grown = [], (sum(ls), len(ls), max(ls))
        current.append(i)
        total, rows, longest = grown
    if current:
        batches.append(current)
    return batches


def grouped_batches(
    order: Sequence[int], lengths: Sequence[Sequence[int]], batch_size: int
) -> list[list[int]]:
    """Length-grouped batches over ``order`` (see the module docstring)."""
    batches: list[list[int]] = []
    mega = GROUP_FACTOR * batch_size
    for s in range(0, len(order), mega):
        group = sorted(order[s : s + mega], key=lambda i: -max(lengths[i]))
        batches += [group[k : k + batch_size] for k in range(0, len(group), batch_size)]
    return batches


class PlannedBatchSampler(Sampler[list[int]]):
    """A resumable batch sampler for ``StatefulDataLoader(batch_sampler=...)`` (see the module docstring).

    ``lengths[i]``: the sequence lengths example i adds to a batch (one for chat, two for a preference
    pair or an RLMEC record). Exactly one of ``max_tokens`` or ``group_by_length`` is used.
    """

    def __init__(
        self,
        lengths: Sequence[Sequence[int]],
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        max_tokens: int | None = None,
        group_by_length: bool = False,
        packed: bool = False,
    ):
        if (max_tokens is None) == (not group_by_length):
            raise ValueError("PlannedBatchSampler needs max_tokens or group_by_length (one of them)")
        self.lengths, self.batch_size = [list(x) for x in lengths], batch_size
        self.max_tokens, self.group_by_length, self.packed = max_tokens, group_by_length, packed
        self.rank, self.world_size = rank, world_size
        self.order_sampler = ResumableSampler(len(self.lengths), shuffle=shuffle, seed=seed)
        self.epoch, self.batches, self._skip = 0, 0, 0
        self._plans: dict[int, list[list[int]]] = {}

    def plan(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch``."""
        if epoch not in self._plans:
            order = self.order_sampler.order(epoch)
            if self.group_by_length:
                every = grouped_batches(order, self.lengths, self.batch_size)
            else:
                every = budget_batches(order, self.lengths, int(self.max_tokens), self.packed)
            per_rank = -(-len(every) // self.world_size)
            every += (every * self.world_size)[: per_rank * self.world_size - len(every)]
            self._plans = {epoch: every[self.rank :: self.world_size]}
        return self._plans[epoch]

    def __len__(self) -> int:
        return len(self.plan(self.epoch))

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        start, self._skip = self._skip, 0
        self.batches = start
        for batch in self.plan(self.epoch)[start:]:
            self.batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.batches = self._skip = int(state["batches"])
