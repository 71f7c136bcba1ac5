"""Token log-probs of several continuations per prompt with each prompt run through the model once.

One core, :func:`shared_prefix_scores`, serves both trainers that score many rows sharing a prompt:

* online RL (``module.shared_prefix``, :func:`shared_prefix_logprobs`): a group batch
  (``algorithms/rollouts.py``) of B prompts × G completions, row ``i·G + j`` on prompt i;
* CaPO (``module.shared_prompt``, ``algorithms/shared_prompt_logprobs.py``): B prompts × (chosen,
  rejected), rows ``0..B-1`` then ``B..2B-1`` on prompts ``0..B-1``.

Scoring such a batch as N plain rows of ``prompt + continuation`` runs every prompt N/B times, forward
and backward. The core (the training-side twin of the decoder's shared-prefix KV cache,
``inference/decoding.py``):

1. runs the B prompts *without their last token* (left- or right-padded) once with ``use_cache``: their
   keys/values (with grad, when the caller records one) form the prefix cache;
2. gathers the cache to the N rows with one ``index_select`` per layer (``rows``: the prompt of each row,
   so any row order is the same call); a differentiable copy, so the gradients of a prompt's rows are
   summed back onto its prefix exactly as when the prompt was run once per row;
3. runs the N rows ``[last prompt token, c_0, …, c_{L-2}]`` on top of it, with position ids continuing
   each prompt's; every continuation token c_k is predicted at one position of this second forward and
   the LM head runs only on those positions (chunk by chunk, ``algorithms/chunked_ce.py``: the
   ``[N·L, V]`` logits are never built).

Every continuation token attends to exactly the keys it attends to in its plain row (METHODS.md §1:
log π(y | x) = Σ_t log π(y_t | x, y_<t)), so the values equal
:func:`algorithms.logprobs.model_token_logprobs` up to floating-point rounding
(``tests/test_online_rl_shared_prefix.py``, ``tests/test_shared_prompt.py``). The cost is ``B·P + N·L``
tokens instead of ``N·(P + L)``.

Only full-attention ``DynamicLayer`` caches are gathered. A sliding-window layer keeps only the prefix's
last W-1 slots: CaPO's right-padded prefixes then lose real keys of their shorter rows (wrong values);
a left-padded prefix keeps exactly the keys the window reads (on transformers 5's eager and SDPA paths
the old online-RL path matched the padded rows, 4.8e-7), but other kernels are untested, so both callers
refuse it for now. Such a model raises
:class:`NotSharable` once and is remembered (``_quartet_no_shared_prompt``): both callers then take their
padded rows. Not with gradient checkpointing (a cache is not kept through a recomputed forward), not
under FSDP2 (see :func:`fsdp_sharded`).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch

from algorithms.logprobs import activation_checkpointing_on, chunkable_head, head_inputs, head_logprobs
from algorithms.rollouts import PrefixTensors

#: The model attribute that remembers why its cache can't be shared (set on the first refusal).
REFUSED = "_quartet_no_shared_prompt"


class NotSharable(ValueError):
    """The batch or model can't take the shared-prefix forward (the message says why)."""


def can_share_prefix(model: torch.nn.Module, prefix: PrefixTensors | None) -> bool:
    """Whether :func:`shared_prefix_logprobs` applies: a batch with a non-empty prefix per prompt, and a
    model with a KV cache that is not recomputing its forward (gradient checkpointing), not sharded, and
    not already refused (:data:`REFUSED`)."""
    if prefix is None or bool((prefix.prefix_mask.sum(1) == 0).any()):
        return False
    return not activation_checkpointing_on(model) and sharing_refused(model) is None


def sharing_refused(model: torch.nn.Module) -> str | None:
    """Why no shared-prefix forward runs on ``model`` whatever the batch (one of its caches was refused
    before, :data:`REFUSED`, or it is FSDP-sharded); None when it may. Both callers ask this."""
    if getattr(model, REFUSED, None):
        return str(getattr(model, REFUSED))
    if fsdp_sharded(model):
        return "the model is FSDP-sharded: a second forward of its blocks before the backward finds their weights freed"
    return None


def fsdp_sharded(model: torch.nn.Module) -> bool:
    """FSDP2 frees each block's gathered weights after its forward; the prefix forward's backward then
    finds them gone (a second forward of the same blocks before the backward), so sharded models take
    the padded rows."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return False
    return any(isinstance(m, FSDPModule) for m in model.modules())


def _cache_keyword(model: torch.nn.Module) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def gather_cache_rows(cache: Any, rows: torch.Tensor) -> None:
    """Every layer's keys and values re-indexed to ``rows`` (row r gets prompt ``rows[r]``'s), in place;
    only full-attention ``DynamicLayer`` caches (see the module docstring on sliding windows)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        kinds = sorted({type(layer).__name__ for layer in layers or []}) or [type(cache).__name__]
        raise NotSharable(
            f"the model's KV cache has {', '.join(kinds)} layers, not full-attention DynamicLayer"
        )
    for layer in layers:
        layer.keys = layer.keys.index_select(0, rows)
        layer.values = layer.values.index_select(0, rows)


def prefix_cache(
    model: torch.nn.Module, prefix_ids: torch.Tensor, prefix_mask: torch.Tensor, rows: torch.Tensor
) -> Any:
    """Step 1 and 2: the prefixes' KV cache gathered to ``rows``, or None for an empty prefix. Right-padded
    prefixes run without a mask (causal attention already keeps real tokens off later slots, and a
    prefix of padding only gives no all-masked row)."""
    if prefix_ids.shape[1] == 0:
        return None
    mask = prefix_mask.long()
    right_padded = bool((mask[:, 1:] <= mask[:, :-1]).all())
    out = model(input_ids=prefix_ids, attention_mask=None if right_padded else mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1)  # fmt: skip
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if cache is None:
        raise NotSharable("the model returned no KV cache")
    gather_cache_rows(cache, rows)
    return cache


def shared_prefix_scores(
    model: torch.nn.Module,
    prefix_ids: torch.Tensor,
    prefix_mask: torch.Tensor,
    rows: torch.Tensor,
    step_ids: torch.Tensor,
    targets: torch.Tensor,
    keep: torch.Tensor,
    impl: str = "chunked",
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp [K], correct [K])`` of ``targets[keep]`` in row-major order: ``prefix_ids``/``prefix_mask``
    [B, P] the prompts minus their last token; ``rows`` [N] the prompt of each row; ``step_ids`` [N, L]
    ``[last prompt token, c_0, …, c_{L-2}]``; ``targets`` [N, L] the continuations; ``keep`` [N, L] bool,
    right-aligned: a row's real step inputs, each scoring its continuation token. A refused cache raises
    :class:`NotSharable` and is remembered on the model."""
    try:
        cache = prefix_cache(model, prefix_ids, prefix_mask, rows)
    except NotSharable as e:
        setattr(model, REFUSED, str(e))
        raise
    attention = torch.cat([prefix_mask.long().index_select(0, rows), keep.long()], dim=1)
    start = prefix_mask.long().sum(1).index_select(0, rows)
    positions = start[:, None] + torch.arange(keep.shape[1], device=keep.device)
    head = chunkable_head(model)
    kwargs = {_cache_keyword(model): cache} if cache is not None else {}
    with head_inputs(head) if head is not None else contextlib.nullcontext([]) as seen:
        out = model(input_ids=step_ids, attention_mask=attention, position_ids=positions, use_cache=cache is not None, logits_to_keep=keep, **kwargs)  # fmt: skip
    picked = targets[keep]
    if head is None:  # the model's own logits at the kept positions (a sharded or wrapped head)
        logits = out.logits.reshape(picked.numel(), -1)
        logp = -torch.nn.functional.cross_entropy(logits.float(), picked, reduction="none")
        return logp, logits.detach().argmax(-1).eq(picked)
    if len(seen) != 1:
        raise NotSharable(f"the model called its LM head {len(seen)} times in one forward")
    hidden = seen[0]  # [kept, H]; [N, L, H] from a model that ignores a boolean logits_to_keep
    hidden = hidden[keep] if hidden.dim() == 3 else hidden.reshape(-1, head.in_features)
    return head_logprobs(hidden, head, picked, impl, chunk_tokens)


def shared_prefix_logprobs(
    model: torch.nn.Module, prefix: PrefixTensors, chunk_tokens: int | None = None
) -> torch.Tensor:
    """``logp [N, L]`` (fp32): log π(c_k | prompt, c_<k) of completion token k of each row (row ``i·G + j``
    on prompt i), 0 where ``prefix.completion_mask`` is off. Grad flows when the caller records one."""
    b, n = prefix.prefix_ids.shape[0], prefix.completion_ids.shape[0]
    rows = torch.arange(b, device=prefix.prefix_ids.device).repeat_interleave(n // b)
    keep = prefix.completion_mask.bool()
    logp, _ = shared_prefix_scores(model, prefix.prefix_ids, prefix.prefix_mask, rows, prefix.step_ids,
                                   prefix.completion_ids, keep, "chunked", chunk_tokens)  # fmt: skip
    return torch.zeros(keep.shape, dtype=logp.dtype, device=logp.device).masked_scatter(keep, logp)
