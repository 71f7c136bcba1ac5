"""Shared DataModule plumbing: resumable loaders, rank sharding, deterministic train/val split."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from algorithms.packing import PackingCollator
from datamodules.batch_plan import PlannedBatchSampler
from datamodules.resumable_sampler import ResumableSampler
from utils.errors import ConfigError


class TokenDataModule(L.LightningDataModule):
    """Base for Quartet's DataModules. Subclasses fill ``self.train_dataset``/``self.val_dataset``
    (any map-style dataset) and ``self.collate`` in ``setup``.

    Loaders are torchdata ``StatefulDataLoader``s over a ``ResumableSampler`` sharded by rank, so a
    mid-epoch resume is exact. Set ``trainer.use_distributed_sampler=false`` (the shipped trainer
    configs do): sharding happens here.

    Batch shape (every chat-shaped DataModule): ``packing`` lays each batch's rows end to end with no
    padding (``algorithms/packing.py``); ``max_tokens_per_batch`` cuts batches by a token budget instead
    of ``batch_size`` rows; ``group_by_length`` batches rows of similar length (``batch_plan.py``). The
    planned batches are a function of the sampler's order, so resume stays exact. Subclasses with those
    options implement :meth:`example_lengths`.
    """

    def __init__(
        self,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        packing: bool = False,
        max_tokens_per_batch: int | None = None,
        group_by_length: bool = False,
    ):
        super().__init__()
        problems = []
        if max_tokens_per_batch is not None and (
            not isinstance(max_tokens_per_batch, int) or max_tokens_per_batch < 1
        ):
            problems.append(
                f"data.max_tokens_per_batch={max_tokens_per_batch} must be null or a positive integer"
            )
        if group_by_length and max_tokens_per_batch is not None:
            problems.append("data.group_by_length and data.max_tokens_per_batch exclude each other: set one")
        planned = group_by_length or max_tokens_per_batch is not None
        if planned and type(self).example_lengths is TokenDataModule.example_lengths:
            problems.append(
                f"data.max_tokens_per_batch / data.group_by_length: {type(self).__name__} has no example "
                "lengths to plan batches by; leave both unset"
            )
        if problems:
            raise ConfigError(problems)
        self.packing, self.max_tokens_per_batch = bool(packing), max_tokens_per_batch
        self.group_by_length = bool(group_by_length)
        self._lengths: dict[int, list[list[int]]] = {}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle = shuffle
        self.train_dataset: Any = None
        self.val_dataset: Any = None
        self.collate: Any = None

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def example_lengths(self, dataset: Any) -> list[list[int]]:
        """The lengths of the sequences each example of ``dataset`` adds to a batch (for a token budget
        or length grouping). Data modules that offer either override it; the constructor refuses both
        settings for one that doesn't, so this is never reached from a config."""
        raise NotImplementedError(f"{type(self).__name__} has no data.max_tokens_per_batch / group_by_length")

    def _lengths_of(self, dataset: Any) -> list[list[int]]:
        if id(dataset) not in self._lengths:
            self._lengths[id(dataset)] = self.example_lengths(dataset)
        return self._lengths[id(dataset)]

    def _collate_fn(self) -> Any:
        return PackingCollator(self.collate) if self.packing else self.collate

    def _batch_sampler(self, dataset: Any, shuffle: bool, batch_size: int) -> PlannedBatchSampler | None:
        if self.max_tokens_per_batch is None and not self.group_by_length:
            return None
        rank, world = self._rank_world()
        return PlannedBatchSampler(
            self._lengths_of(dataset),
            batch_size,
            shuffle=shuffle,
            seed=self.seed,
            rank=rank,
            world_size=world,
            max_tokens=self.max_tokens_per_batch,
            group_by_length=self.group_by_length,
            packed=self.packing,
        )

    def _loader(
        self, dataset: Any, shuffle: bool, batch_size: int, planned: bool = True
    ) -> StatefulDataLoader:
        common = {
            "collate_fn": self._collate_fn(),
            "num_workers": self.num_workers,
            "persistent_workers": False,
        }
        plan = self._batch_sampler(dataset, shuffle, batch_size) if planned else None
        if plan is not None:
            return StatefulDataLoader(dataset, batch_sampler=plan, **common)
        rank, world = self._rank_world()
        sampler = ResumableSampler(len(dataset), shuffle=shuffle, seed=self.seed, rank=rank, world_size=world)
        return StatefulDataLoader(dataset, batch_size=batch_size, sampler=sampler, **common)

    def scoring_dataloader(self, split: str, batch_size: int | None = None) -> StatefulDataLoader:
        """A fixed-order (unshuffled), rank-sharded loader over ``split`` (``train`` | ``val``), for
        pre-passes that score every example once (e.g. precomputed reference log-probs)."""
        dataset = {"train": self.train_dataset, "val": self.val_dataset}.get(split)
        if dataset is None:
            raise ValueError(f"scoring_dataloader: no {split!r} split is set up")
        return self._loader(dataset, False, batch_size or self.eval_batch_size, planned=False)

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader(self.train_dataset, self.shuffle, self.batch_size)

    def val_dataloader(self) -> StatefulDataLoader | list:
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return []
        return self._loader(self.val_dataset, False, self.eval_batch_size)

    def num_train_batches(self) -> int:
        """Batches per epoch on this rank: what the LR schedule needs, computed without touching the
        Trainer's fit loop (``trainer.estimated_stepping_batches`` inside ``configure_optimizers``
        would set up the train loader before its saved state is restored)."""
        if self.train_dataset is None:
            self.setup("fit")
        plan = self._batch_sampler(self.train_dataset, self.shuffle, self.batch_size)
        if plan is not None:
            return len(plan)
        _, world = self._rank_world()
        per_rank = -(-len(self.train_dataset) // world)
        return -(-per_rank // self.batch_size)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of ``range(n)`` into train and validation indices (validation at least 1 when
    ``val_fraction > 0`` and ``n > 1``)."""
    if val_fraction <= 0 or n < 2:
        return list(range(n)), []
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def cached_map(
    raw: Any,
    fn: Any,
    key: str,
    cache_dir: str | None,
    prefix: str,
    desc: str,
    num_proc: int | None = None,
    batch_size: int = 1000,
    remove_columns: list[str] | None = None,
) -> Any:
    """``raw.map(fn, batched=True)`` into an Arrow cache file ``<cache_dir>/<prefix>-<key>.arrow``, so the
    same data with the same settings is tokenised once; ``cache_dir=None`` keeps it in memory.
    ``remove_columns`` defaults to every input column."""
    cache_file = None
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(Path(cache_dir) / f"{prefix}-{key}.arrow")
    return raw.map(
        fn,
        batched=True,
        batch_size=batch_size,
        remove_columns=raw.column_names if remove_columns is None else remove_columns,
        cache_file_name=cache_file,
        new_fingerprint=key,
        num_proc=num_proc,
        desc=desc,
    )


def file_identity(path: str | Path) -> Any:
    """What keys a data source in a cache: a file by its resolved path, size and mtime; a folder (a
    ``save_to_disk`` dataset) by the same of every file in it; anything else (a hub dataset name) by
    itself."""
    from utils.data_paths import expand_pattern

    files = expand_pattern(path)
    if files is not None:  # a glob: every file it matches now
        return [file_identity(f) for f in files]
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]
    if p.is_dir():
        return [
            [str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns]
            for f in sorted(p.rglob("*"))
            if f.is_file()
        ]
    return str(path)


def fingerprint(*parts: Any, files: Sequence[str | Path] = ()) -> str:
    """A short, stable hash of JSON-able ``parts`` plus the identity of each of ``files`` (the data
    sources the caller names as files; see :func:`file_identity`). Strings in ``parts`` are hashed as
    they are, never looked up on disk: a chat template is a string too, and often longer than a file
    name may be."""
    items = [list(parts), [file_identity(f) for f in files]]
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]
