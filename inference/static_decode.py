"""Decode steps over a static KV cache, compiled once with ``torch.compile`` (``compile_decode=true``).

The eager loop of :mod:`inference.decoding` pays Python and dispatcher overhead for every one of the
model's ~10 ops per layer per step; at small batches on CPU that overhead is a large share of a step.
Here the prompt batch is prefilled eagerly exactly as in the eager loop, its KV cache is copied into a
``transformers`` ``StaticCache`` of fixed capacity, and every decode step is one call of a
``torch.compile``-d function whose input shapes never change (one compile per batch shape and capacity):

- the attention mask is built once at full width ``[rows, capacity]`` (the prompt's left padding as 0,
  every later slot as 1); slots not yet written are hidden by the causal mask, which ``transformers``
  derives from the cache's own write position;
- finished rows are not dropped (dropping would change the batch shape and force a recompile); their
  tokens are simply not recorded;
- the capacity is rounded up to a multiple of :data:`CAPACITY_STEP`, so batches whose prompts differ a
  little in length share one compiled graph.

Measured (docs/decoding_speed.md): faster than eager on the 2-layer test model, but 0.77x eager for
SmolLM2-135M at 16 rows on a 2-core CPU, where a step is bound by the weight GEMMs, not by Python.

Greedy output equals the eager loop's token for token (tests/test_static_decode.py): the prefill is the
same computation, and a decode step differs only in the order of float additions, which has not changed
an argmax on the tiny or the real test model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicLayer, StaticCache

CAPACITY_STEP = 128
"""Static cache lengths are rounded up to a multiple of this many tokens (fewer distinct compiles)."""


def static_capacity(prompt_width: int, max_new_tokens: int) -> int:
    """Cache slots for a batch: its prompt width plus every decode step, rounded up to CAPACITY_STEP."""
    needed = prompt_width + max_new_tokens
    return -(-needed // CAPACITY_STEP) * CAPACITY_STEP


def to_static_cache(cache: Any, config: Any, capacity: int) -> StaticCache:
    """A ``StaticCache`` of ``capacity`` slots holding the (prefilled) states of a dynamic cache.

    Raises:
        ValueError: when a layer is not a plain (or preallocated) full-attention dynamic layer, e.g. a
            sliding-window or linear-attention model: those have no exact static counterpart here.
    """
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list) or not all(isinstance(layer, DynamicLayer) for layer in layers):
        raise ValueError("compile_decode needs a model whose KV cache has only full-attention layers")
    static = StaticCache(config=config, max_cache_len=capacity)
    if len(static.layers) != len(layers):
        raise ValueError("compile_decode: the model's static cache layout differs from its dynamic cache")
    for src, dst in zip(layers, static.layers):
        keys, values = src.keys, src.values
        length = keys.shape[-2]
        if length > capacity:
            raise ValueError(f"compile_decode: {length} cached tokens exceed the capacity {capacity}")
        dst.lazy_initialization(keys, values)
        dst.keys[:, :, :length].copy_(keys)
        dst.values[:, :, :length].copy_(values)
        dst.cumulative_length.fill_(length)
    return static


def _decode_step(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: StaticCache,
) -> torch.Tensor:
    """One decode step: last-position logits (float32) of every row; the cache is updated in place."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[:, -1, :].float()


_compiled_step = torch.compile(_decode_step, dynamic=False)


@dataclass
class StaticDecodeState:
    """The batch being decoded over a static cache; same interface as the eager loop's state."""

    cache: StaticCache
    attn: torch.Tensor  # [rows, capacity]: prompt padding 0, every other slot 1
    logits: torch.Tensor
    next_pos: torch.Tensor
    compiled: bool = True

    def decode(self, model: torch.nn.Module, next_tok: torch.Tensor) -> None:
        """One decode step of every row with its token ``next_tok``."""
        step = _compiled_step if self.compiled else _decode_step
        self.logits = step(model, next_tok.unsqueeze(1), self.next_pos.unsqueeze(1), self.attn, self.cache)
        self.next_pos = self.next_pos + 1


def static_state(
    cache: Any,
    attn: torch.Tensor,
    logits: torch.Tensor,
    next_pos: torch.Tensor,
    config: Any,
    max_new_tokens: int,
    compiled: bool = True,
) -> StaticDecodeState:
    """Move a prefilled batch (eager cache, 2-D prompt mask) onto a static cache sized for the generation."""
    width = attn.shape[1]
    capacity = static_capacity(width, max_new_tokens)
    static = to_static_cache(cache, config, capacity)
    full = attn.new_ones((attn.shape[0], capacity))
    full[:, :width] = attn
    return StaticDecodeState(static, full, logits, next_pos, compiled)
