"""Response log-probs of preference pairs with each prompt run ONCE (a shared-prompt forward).

A preference batch (``datamodules/preference.py``) holds 2B rows: ``prompt_i + chosen_i`` (rows 0..B-1)
then ``prompt_i + rejected_i`` (rows B..2B-1), right-padded, ``labels`` -100 on the prompt and padding.
Only the response tokens are scored (METHODS.md §1: log π(y | x) = Σ_t log π(y_t | x, y_<t)), yet the
plain forward runs every prompt twice, for the policy and again for a live reference. Here:

the batch is split (:func:`split_pairs`) into its B prompts and 2B responses and scored by the shared
core, :func:`algorithms.shared_prefix.shared_prefix_scores`: the B prompts minus their last token run
once with a KV cache, the cache is gathered to the 2B rows (prompts 0..B-1 twice: chosen rows, then
rejected rows), and the rows ``[last prompt token, y_0, …, y_{R-2}]`` run on top of it, each input
scoring the next response token. Every response token attends to exactly the keys it attends to in the
full row, so the log-probs are the plain forward's up to float summation order
(``tests/test_shared_prompt.py``: 1e-5). Gradients reach the prompt's forward through the cache. The LM
head runs only on the counted positions, chunk by chunk as in ``algorithms/logprobs.py``.

The saving: with prompts a fraction f of a pair's real tokens (f = 0.83 on ``data/capo/pairs.jsonl``),
the per-token work (projections, MLP) of a step falls by about f/2 (docs/capo.md).

Where it does not apply (:func:`shared_prompt_problem`): packed batches (no separate rows), gradient
checkpointing (transformers drops the cache under it), an LM head that is not a plain local linear
layer (logit transforms, ``torch.compile``, FSDP-sharded), a cache with other than full-attention
layers (sliding windows), or rows that do not pair up.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import torch

from algorithms.logprobs import LOGPROB_IMPLS, TokenLogprobs, activation_checkpointing_on, chunkable_head
from algorithms.packing import is_packed
from algorithms.reference import adapter_disabled, eval_mode, is_peft_model
from algorithms.shared_prefix import NotSharable, shared_prefix_scores, sharing_refused
from models.nll import IGNORE_INDEX


class SharedPromptLayout(NamedTuple):
    """A preference batch split into its B prompts and 2B responses (all on the batch's device)."""

    prompt_ids: torch.Tensor  # [B, P], right-padded (slots past plen_i hold other tokens, masked)
    prompt_mask: torch.Tensor  # [B, P] bool
    prompt_lens: torch.Tensor  # [2B] long: plen of each row (rows i and B + i equal)
    response_ids: torch.Tensor  # [2B, R], right-padded with 0
    response_mask: torch.Tensor  # [2B, R] bool
    grid_mask: torch.Tensor  # [2B, T-1] bool: the plain path's counted positions


def shared_prompt_problem(model: torch.nn.Module, batch: dict[str, Any]) -> str | None:
    """Why the shared-prompt forward can't score ``batch`` under ``model``, or None when it can (the
    batch's row pairing is checked by :func:`split_pairs`)."""
    if is_packed(batch):
        return "the batch is packed (data.packing=true): its rows are laid end to end, not prompt + response"
    inner = getattr(model, "_orig_mod", model)
    inner = inner.get_base_model() if is_peft_model(inner) else inner
    if activation_checkpointing_on(inner) and torch.is_grad_enabled() and inner.training:
        return "gradient checkpointing is on: transformers drops the KV cache under it"
    refused = sharing_refused(model)
    if refused:
        return refused
    if chunkable_head(model) is None:
        return (
            "the LM head is not a plain local linear layer (logit transform, torch.compile or FSDP-sharded), "
            "so its input can't be taken at chosen positions"
        )
    return None


def split_pairs(batch: dict[str, Any]) -> SharedPromptLayout:
    """The prompts and responses of a padded preference batch; raises :class:`NotSharable` when rows i
    and B + i do not share their prompt or a row has no counted token."""
    ids, labels, attn = batch["input_ids"], batch["labels"], batch["attention_mask"].bool()
    rows, width = ids.shape
    if rows % 2:
        raise NotSharable(f"{rows} rows: a preference batch has 2B (chosen rows, then rejected rows)")
    b = rows // 2
    counted = labels.ne(IGNORE_INDEX)
    if not bool(counted.any(-1).all()):
        raise NotSharable("a row has no response token")
    plen = counted.int().argmax(-1)  # the first counted label: the response starts there
    if not bool((plen > 0).all()):
        raise NotSharable("a row has no prompt token")
    lengths = attn.sum(-1)
    rlen = lengths - plen
    cols = torch.arange(width, device=ids.device)
    in_response = (cols >= plen[:, None]) & (cols < lengths[:, None])
    if not torch.equal(in_response, counted) or not torch.equal(attn, cols < lengths[:, None]):
        raise NotSharable("the rows are not right-padded prompt + response rows")
    p = int(plen[:b].max())
    prompt_mask = cols[None, :p] < plen[:b, None]
    same = (ids[:b, :p] == ids[b:, :p]) | ~prompt_mask
    if not torch.equal(plen[:b], plen[b:]) or not bool(same.all()):
        raise NotSharable("rows i and B + i do not share their prompt")
    r = int(rlen.max())
    offsets = torch.arange(r, device=ids.device)
    response_mask = offsets[None, :] < rlen[:, None]
    gather_at = (plen[:, None] + offsets[None, :]).clamp(max=width - 1)
    response_ids = ids.gather(1, gather_at).masked_fill(~response_mask, 0)
    return SharedPromptLayout(ids[:b, :p], prompt_mask, plen, response_ids, response_mask, counted[:, 1:])


def _shared_scores(
    model: torch.nn.Module, lay: SharedPromptLayout, impl: str, chunk_tokens: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp, correct)`` of the counted response tokens (row-major) by
    :func:`algorithms.shared_prefix.shared_prefix_scores`: prefix = each prompt minus its last token
    (right-padded), step = ``[last prompt token, y_0, …, y_{R-2}]``, rows 0..B-1 then B..2B-1 on prompts
    0..B-1."""
    b, p = lay.prompt_ids.shape
    dev = lay.prompt_ids.device
    plen = lay.prompt_lens[:b]
    prefix_mask = torch.arange(p - 1, device=dev)[None] < (plen - 1)[:, None]
    last = lay.prompt_ids.gather(1, (plen - 1)[:, None]).repeat(2, 1)
    step_ids = torch.cat([last, lay.response_ids[:, :-1]], 1)
    rows = torch.arange(b, device=dev).repeat(2)
    return shared_prefix_scores(model, lay.prompt_ids[:, : p - 1], prefix_mask, rows, step_ids,
                                lay.response_ids, lay.response_mask, impl, chunk_tokens)  # fmt: skip


def shared_prompt_logprobs(
    model: torch.nn.Module,
    batch: dict[str, Any],
    impl: str = "chunked",
    chunk_tokens: int | None = None,
    layout: SharedPromptLayout | None = None,
) -> TokenLogprobs:
    """:func:`algorithms.logprobs.batch_token_logprobs` of a padded preference batch, each prompt run once
    (see the module docstring): the same ``[2B, T-1]`` grid of log-probs, mask and argmax hits. Raises
    :class:`NotSharable` where :func:`shared_prompt_problem` would name a problem or the rows don't pair.
    ``layout``: the batch's :func:`split_pairs`, when the caller already has it."""
    if impl not in LOGPROB_IMPLS:
        raise ValueError(f"logprob impl {impl!r} must be one of {', '.join(LOGPROB_IMPLS)}")
    problem = shared_prompt_problem(model, batch)
    if problem:
        raise NotSharable(problem)
    lay = split_pairs(batch) if layout is None else layout
    logp, correct = _shared_scores(model, lay, impl, chunk_tokens)  # a refused cache is remembered
    mask = lay.grid_mask
    grid = torch.zeros(mask.shape, dtype=logp.dtype, device=logp.device).masked_scatter(mask, logp)
    hits = torch.zeros_like(mask).masked_scatter(mask, correct)
    return TokenLogprobs(grid, mask, hits)


@torch.no_grad()
def frozen_shared_prompt_logprobs(
    model: torch.nn.Module,
    batch: dict[str, Any],
    adapter_off: bool = False,
    impl: str = "chunked",
    chunk_tokens: int | None = None,
    layout: SharedPromptLayout | None = None,
) -> TokenLogprobs:
    """:func:`shared_prompt_logprobs` under a frozen model, as ``reference.frozen_batch_logprobs``: no
    grad, eval mode for the call, the LoRA adapter off when ``adapter_off``."""
    off = adapter_disabled(model) if adapter_off and is_peft_model(model) else contextlib.nullcontext()
    with off, eval_mode(model):
        return shared_prompt_logprobs(model, batch, impl, chunk_tokens, layout)
