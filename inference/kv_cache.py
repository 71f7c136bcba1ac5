"""A preallocated KV-cache layer for the decode loop.

``transformers``' ``DynamicLayer`` grows keys/values with ``torch.cat`` on every decode step, which
copies the whole cache each step (quadratic in the generated length). When the number of steps is
known in advance, :func:`preallocate` swaps every plain ``DynamicLayer`` of a cache for a
:class:`PreallocatedLayer` that writes new states into a buffer sized for the whole generation and
hands out views of its filled part. Other layer types (sliding window, linear attention, ...) are
left untouched, so the swap is always safe.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose states live in a fixed-capacity buffer (grown by doubling if exceeded)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        super().__init__()
        length = keys.shape[-2]
        capacity = max(capacity, length)
        self._k = keys.new_empty((*keys.shape[:-2], capacity, keys.shape[-1]))
        self._v = values.new_empty((*values.shape[:-2], capacity, values.shape[-1]))
        self._k[..., :length, :] = keys
        self._v[..., :length, :] = values
        self._len = length
        self.device = keys.device
        self.is_initialized = True
        self._sync()

    def _sync(self) -> None:
        self.keys = self._k[..., : self._len, :]
        self.values = self._v[..., : self._len, :]

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self._k.shape[-2])
        k = self._k.new_empty((*self._k.shape[:-2], capacity, self._k.shape[-1]))
        v = self._v.new_empty((*self._v.shape[:-2], capacity, self._v.shape[-1]))
        k[..., : self._len, :] = self.keys
        v[..., : self._len, :] = self.values
        self._k, self._v = k, v

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = key_states.shape[-2]
        if self._len + q > self._k.shape[-2]:
            self._grow(self._len + q)
        self._k[..., self._len : self._len + q, :] = key_states
        self._v[..., self._len : self._len + q, :] = value_states
        self._len += q
        self._sync()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._len

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop expects a negative number of tokens to remove")
        self._len = max(0, self._len + tokens_to_remove)
        self._sync()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._k = self._k.repeat_interleave(repeats, dim=0)
        self._v = self._v.repeat_interleave(repeats, dim=0)
        self._sync()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k = self._k[indices, ...]
        self._v = self._v[indices, ...]
        self._sync()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def reset(self) -> None:
        self._len = 0
        self._sync()


def preallocate(cache: object, extra_tokens: int) -> int:
    """Swap the plain ``DynamicLayer``s of ``cache`` for preallocated ones with room for ``extra_tokens``.

    Returns the number of layers swapped (0 when the cache has no such layers).
    """
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list):
        return 0
    swapped = 0
    for i, layer in enumerate(layers):
        if (
            type(layer) is DynamicLayer
            and layer.is_initialized
            and layer.keys is not None
            and layer.keys.numel()
        ):
            layers[i] = PreallocatedLayer(layer.keys, layer.values, layer.keys.shape[-2] + extra_tokens)
            swapped += 1
    return swapped
