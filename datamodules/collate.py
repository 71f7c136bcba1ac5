"""Dynamic padding: pad each batch only to its own longest sequence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from algorithms.logprobs import IGNORE_INDEX


class PadCollator:
    """Right-pad ``input_ids`` (with ``pad_id``), ``labels`` (with -100) and build ``attention_mask``.

    Extra integer-list fields named in ``pad_values`` are padded with their own value; scalar fields
    are stacked; string fields are passed through as lists. A class (not a closure) so that it
    pickles into dataloader workers.
    """

    def __init__(
        self, pad_id: int, pad_to_multiple_of: int | None = None, pad_values: dict[str, Any] | None = None
    ):
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of
        self.pad_values = {"input_ids": pad_id, "labels": IGNORE_INDEX, **(pad_values or {})}

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        batch: dict[str, Any] = {}
        for key in features[0]:
            values = [f[key] for f in features]
            if key in self.pad_values:
                batch[key] = self._pad(values, longest, self.pad_values[key])
            elif isinstance(values[0], str):
                batch[key] = values
            else:
                batch[key] = torch.as_tensor(values)
        batch["attention_mask"] = self._pad([[1] * len(f["input_ids"]) for f in features], longest, 0)
        return batch

    @staticmethod
    def _pad(rows: Sequence[Sequence[Any]], length: int, value: Any) -> torch.Tensor:
        dtype = torch.float32 if rows and rows[0] and isinstance(rows[0][0], float) else torch.long
        out = torch.full((len(rows), length), value, dtype=dtype)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.as_tensor(row, dtype=dtype)
        return out
