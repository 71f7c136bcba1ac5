"""The lifecycle of precomputed reference values (``module.reference=precomputed``), for any method.

A method (CaPO today, RLMEC next) names its columns and gives a scoring function; this component
attaches the values to the data module's splits, taking them, in order, from this run's memory or
checkpoint, from the disk cache (keyed by the data, the initial weights and the model config), or
from a pre-pass over the data with the still-initial policy (every rank takes part, as FSDP needs).
The values travel in checkpoints, so a resume is exact.

The data module provides ``dataset(split)``, ``set_columns(split, columns)``, ``keys[split]``,
``cache_dir``, ``eval_batch_size`` and ``scoring_dataloader(split, batch_size)`` (a fixed-order,
rank-sharded loader; see ``datamodules/base.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from algorithms import reference as ref_lib
from utils.errors import QuartetError

ScoreFn = Callable[[dict[str, Any]], dict[str, torch.Tensor]]


@dataclass
class PrecomputedReference:
    """Precomputed per-example reference columns of one method.

    Attributes:
        name: the method's name, used in cache file names, barriers and messages (e.g. ``capo``).
        columns: the column names the scoring function returns (e.g. ``ref_chosen_logps``).
        values: split -> column -> tensor [num_examples, ...], once prepared.
        keys: split -> the cache key the values were computed for.
        from_checkpoint: values came from a checkpoint (kept even when the key differs).
        what: how messages name the values.
    """

    name: str
    columns: tuple[str, ...]
    what: str = "reference values"
    values: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    from_checkpoint: bool = False

    def prepare(
        self,
        trainer: Any,
        splits: tuple[str, ...],
        key_of: Callable[[str], str],
        score: ScoreFn | None,
        batch_size: int | None = None,
        to_device: Callable[[dict[str, Any]], dict[str, Any]] = lambda b: b,
    ) -> None:
        """Attach the columns to ``trainer.datamodule``'s ``splits``; ``score=None`` forbids a pre-pass
        (validation or a resume: the values must come from memory, the checkpoint or the cache)."""
        dm = trainer.datamodule
        for split in splits:
            ds = dm.dataset(split)
            if ds is None or len(ds) == 0:
                continue
            key = key_of(split)
            path = ref_lib.cache_path(dm.cache_dir, f"{self.name}-ref", key)
            columns = self._known(split, key)
            if columns is None:
                columns = ref_lib.load_cached(path, key)
            if columns is None and score is not None:
                rank_zero_info(f"precomputing {self.what} for {len(ds)} {split} examples")
                loader = dm.scoring_dataloader(split, batch_size or dm.eval_batch_size)
                columns = ref_lib.precompute(score, loader, len(ds), to_device)
                if trainer.is_global_zero:
                    ref_lib.save_cached(path, key, columns)
                trainer.strategy.barrier(f"{self.name}-ref-precompute")
            self._check(columns, split, len(ds), path)
            self.values[split], self.keys[split] = columns, key
            dm.set_columns(split, self._lists(columns))

    def _known(self, split: str, key: str) -> dict[str, torch.Tensor] | None:
        columns = self.values.get(split)
        if columns is not None and self.keys.get(split) != key and not self.from_checkpoint:
            return None  # from another run or data; a checkpoint's own values are always kept
        return columns

    def _check(self, columns: Mapping[str, torch.Tensor] | None, split: str, n: int, path: Any) -> None:
        if columns is None:
            raise QuartetError(
                f"module.reference=precomputed: no cached {self.what} for the {split} data "
                f"(expected {path}); run training from the start, or resume from its checkpoint"
            )
        got = len(columns[self.columns[0]])
        if got != n:
            raise QuartetError(
                f"module.reference=precomputed: the saved {self.what} cover {got} {split} examples "
                f"but the data has {n}; resume with the same data.path, or start afresh"
            )

    def _lists(self, columns: Mapping[str, torch.Tensor]) -> dict[str, list[Any]]:
        return {k: columns[k].tolist() for k in self.columns}

    def require(self, datamodule: Any, split: str = "train") -> None:
        """Raise when ``split`` has no reference columns (the checkpoint had none and the cache is gone)."""
        ds = datamodule.dataset(split)
        if ds is not None and not set(self.columns) <= set(ds.column_names):
            raise QuartetError(
                f"module.reference=precomputed: no {self.what} for the {split} data (the checkpoint "
                "has none and the cache is missing); resume from a checkpoint of a precomputed run or start afresh"
            )

    def state_dict(self) -> dict[str, Any] | None:
        """What a checkpoint keeps (None when nothing was prepared)."""
        if not self.values:
            return None
        return {"keys": dict(self.keys), "columns": {s: dict(c) for s, c in self.values.items()}}

    def load_state_dict(self, saved: Mapping[str, Any], datamodule: Any = None) -> None:
        """Take a checkpoint's values; attach them to ``datamodule`` when its splits are set up."""
        self.keys = dict(saved["keys"])
        self.values = {s: dict(c) for s, c in saved["columns"].items()}
        if datamodule is None or not getattr(datamodule, "keys", None):
            return
        for split, columns in self.values.items():
            ds = datamodule.dataset(split)
            if ds is not None and len(ds) == len(columns[self.columns[0]]):
                datamodule.set_columns(split, self._lists(columns))
