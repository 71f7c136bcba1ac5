"""Token log-probs of G completions per prompt with each prompt run through the model once.

A group batch (``algorithms/rollouts.py``) is B prompts × G completions. Scoring it as N = B·G rows of
``prompt + completion`` runs every prompt G times, forward and backward. Here (the training-side twin of
the decoder's shared-prefix KV cache, ``inference/decoding.py``):

1. the B prompts *without their last token*, left-padded, go through the model once with ``use_cache``:
   their keys/values (with grad, when the caller records one) form the prefix cache;
2. the cache is repeat-interleaved to N rows (a differentiable copy: the gradients of the G rows are
   summed back onto their prompt's prefix, exactly as when the prompt was run G times);
3. the N rows ``[last prompt token, c_0, …, c_{L-2}]`` run on top of it, so every completion token c_k
   is predicted at one position of this second forward and the LM head runs only on those positions
   (chunk by chunk, ``algorithms/chunked_ce.py``: the ``[N·L, V]`` logits are never built).

The values equal :func:`algorithms.logprobs.model_token_logprobs` on the padded rows up to floating-point
rounding (other paddings, other reduction orders): ``tests/test_online_rl_shared_prefix.py``. The cost is
``B·P + N·L`` tokens instead of ``N·(P + L)``. Used for GRPO/RLOO's policy and reference log-probs
(``module.shared_prefix``); not with gradient checkpointing (a cache is not kept through a recomputed
forward), not under FSDP2 (see :func:`_fsdp_sharded`), nor when a prompt has a single token (its prefix
would be empty).
"""

from __future__ import annotations

import contextlib
import inspect

import torch

from algorithms.chunked_ce import chunked_token_logprobs
from algorithms.logprobs import activation_checkpointing_on, chunkable_head, head_inputs
from algorithms.rollouts import PrefixTensors


def can_share_prefix(model: torch.nn.Module, prefix: PrefixTensors | None) -> bool:
    """Whether :func:`shared_prefix_logprobs` applies: a batch with a non-empty prefix per prompt, and a
    model with a KV cache that is not recomputing its forward (gradient checkpointing)."""
    if prefix is None or bool((prefix.prefix_mask.sum(1) == 0).any()):
        return False
    if activation_checkpointing_on(model):
        return False
    return not _fsdp_sharded(model)


def _fsdp_sharded(model: torch.nn.Module) -> bool:
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


def prefix_cache(model: torch.nn.Module, prefix: PrefixTensors, group: int) -> object:
    """The prompts' KV cache (step 1), repeat-interleaved to ``group`` rows per prompt (step 2)."""
    mask = prefix.prefix_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=prefix.prefix_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=1)  # fmt: skip
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if cache is None:
        raise RuntimeError("shared_prefix_logprobs: the model returned no KV cache")
    cache.batch_repeat_interleave(group)
    return cache


def shared_prefix_logprobs(
    model: torch.nn.Module, prefix: PrefixTensors, chunk_tokens: int | None = None
) -> torch.Tensor:
    """``logp [N, L]`` (fp32): log π(c_k | prompt, c_<k) of completion token k of each row, 0 where
    ``prefix.completion_mask`` is off. Grad flows when the caller records one."""
    group = prefix.completion_ids.shape[0] // prefix.prefix_ids.shape[0]
    cache = prefix_cache(model, prefix, group)
    keep = prefix.completion_mask.bool()
    attention = torch.cat([prefix.prefix_mask.repeat_interleave(group, dim=0), prefix.completion_mask], dim=1)
    start = prefix.prefix_mask.sum(1).repeat_interleave(group)
    positions = start.unsqueeze(1) + torch.arange(keep.shape[1], device=keep.device)
    targets = prefix.completion_ids[keep]
    head = chunkable_head(model)
    kwargs = {_cache_keyword(model): cache}
    with head_inputs(head) if head is not None else contextlib.nullcontext([]) as seen:
        out = model(input_ids=prefix.step_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                    logits_to_keep=keep, **kwargs)  # fmt: skip
    if head is not None:
        if len(seen) != 1:
            raise RuntimeError(f"shared_prefix_logprobs: the LM head ran {len(seen)} times, not once")
        hidden = seen[0]  # [kept, H]; [N, L, H] from a model that ignores a boolean logits_to_keep
        hidden = hidden[keep] if hidden.dim() == 3 else hidden.reshape(-1, head.in_features)
        logp, _ = chunked_token_logprobs(hidden, head.weight, targets, head.bias, chunk_tokens)
    else:  # the model's own logits at the kept positions (a sharded or wrapped head)
        logits = out.logits.reshape(targets.numel(), -1)
        logp = -torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    return torch.zeros(keep.shape, dtype=logp.dtype, device=logp.device).masked_scatter(keep, logp)
