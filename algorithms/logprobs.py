"""Per-token log-probabilities of given labels under a causal LM, over a response mask.

Shared by every method that scores responses: chat SFT and the Ask model (the masked NLL), CaPO
(sequence log-probs of chosen/rejected), RLMEC (token log-probs for ratios and rewards), reference
pre-passes and online RL. :func:`batch_token_logprobs` is the one entry point for a collated batch,
padded or packed (``algorithms/packing.py``); the LM head runs only on the counted positions and, by
default, chunk by chunk (``algorithms/chunked_ce.py``), so the ``[N, V]`` logits are never built.

``impl`` (``module.logprob_impl``): ``chunked`` (default), ``full`` (the counted positions' logits at
once, then cross-entropy: the path before chunking), ``fused`` (cut-cross-entropy's GPU kernel, opt-in).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

from algorithms.chunked_ce import chunked_token_logprobs, fused_token_logprobs
from algorithms.packing import is_packed, model_inputs, unpack_shifted
from models.cpu_linear import PLAIN_LINEARS, head_min_macs, linear
from models.nll import IGNORE_INDEX, masked_nll, token_logprobs

__all__ = [
    "IGNORE_INDEX",
    "LOGPROB_IMPLS",
    "TokenLogprobs",
    "batch_token_logprobs",
    "masked_nll",
    "model_token_logprobs",
    "sequence_logprobs",
    "token_logprobs",
]

LOGPROB_IMPLS = ("chunked", "full", "fused")
#: Config attributes of models whose logits are more than ``lm_head(h)`` (soft-capping, scaling): those
#: take the ``full`` path, which reads the model's own logits.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class TokenLogprobs(NamedTuple):
    """On the padded ``[R, T-1]`` grid of a batch (entry t: the label of token t+1): ``logp`` (fp32, 0
    off the mask), ``mask`` (bool: the label counts) and ``correct`` (bool: the argmax is the label)."""

    logp: torch.Tensor
    mask: torch.Tensor
    correct: torch.Tensor


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t log p(y_t | context, y_<t) over response tokens: ``(sum [B], token count [B])``."""
    logp, mask = token_logprobs(logits, labels)
    return logp.sum(-1), mask.sum(-1)


def _keep_mask(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shift_mask = labels[:, 1:].ne(IGNORE_INDEX)
    return shift_mask, torch.nn.functional.pad(shift_mask, (0, 1), value=False)


def labelled_logits(
    model: torch.nn.Module, inputs: dict[str, Any], labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits of only the positions whose next token counts (``labels != -100``): ``(logits [N, V],
    targets [N], mask [B, T-1] bool)``, in row-major order; ``inputs`` are the forward's keyword
    arguments (:func:`algorithms.packing.model_inputs`).

    Uses transformers' boolean ``logits_to_keep`` (only those hidden states are projected to the
    vocabulary). Models whose forward does not take it fall back to full logits, with the same result.
    """
    shift_mask, keep = _keep_mask(labels)
    targets = labels[:, 1:][shift_mask]
    n_keep = int(targets.numel())
    if not getattr(model, "_quartet_full_logits", False):
        try:
            logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
        except (TypeError, IndexError):
            logits = None
        if logits is not None and logits.numel() == n_keep * logits.shape[-1]:
            return logits.reshape(n_keep, -1), targets, shift_mask
        model._quartet_full_logits = True  # this model ignores a boolean logits_to_keep
    logits = model(**inputs, use_cache=False).logits
    return logits[:, :-1][shift_mask], targets, shift_mask


def chunkable_head(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The LM head when the logits are exactly ``head(h)`` and its weight is a plain local tensor."""
    if hasattr(model, "_orig_mod") or getattr(model, "_quartet_full_logits", False):
        return None  # torch.compile'd, or a model whose forward ignores a boolean logits_to_keep
    config = getattr(model, "config", None)
    if any(getattr(config, k, None) not in (None, 1.0) for k in LOGIT_TRANSFORMS):
        return None
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    if type(head) not in PLAIN_LINEARS:  # a LoRA-wrapped or parallel head: use the model's own logits
        return None
    from torch.distributed.tensor import DTensor

    if isinstance(head.weight, DTensor):  # FSDP2-sharded: only the model's own forward gathers it
        return None
    return head


@contextlib.contextmanager
def head_inputs(head: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the LM head's inputs while the block runs, and hand the head an empty slice instead, so
    the model's forward computes no logits (the caller applies the head where it needs it)."""
    seen: list[torch.Tensor] = []

    def capture(_module: torch.nn.Module, args: tuple) -> tuple:
        seen.append(args[0])
        return (args[0][..., :0, :],)

    handle = head.register_forward_pre_hook(capture)
    try:
        yield seen
    finally:
        handle.remove()


def activation_checkpointing_on(model: torch.nn.Module) -> bool:
    """Whether the model recomputes its forward in the backward (transformers 5.x's name, then 4.x's):
    a KV cache is not kept through such a forward."""
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    return bool(checkpointing)


def head_logprobs(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    targets: torch.Tensor,
    impl: str = "chunked",
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp [N], correct [N])`` of ``targets`` under ``head(hidden)`` by ``impl`` (chunked, fused or
    full logits)."""
    if impl == "fused":
        return fused_token_logprobs(hidden, head.weight, targets, head.bias)
    min_macs = head_min_macs(head)
    if impl == "full":
        logits = linear(hidden, head.weight, head.bias, min_macs)
        logp = -torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
        return logp, logits.detach().argmax(-1).eq(targets)
    return chunked_token_logprobs(hidden, head.weight, targets, head.bias, chunk_tokens, min_macs)


def labelled_hidden(
    model: torch.nn.Module, head: torch.nn.Linear, inputs: dict[str, Any], labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(hidden [N, H], targets [N], mask [B, T-1])``: the LM head's input at the counted positions,
    taken by a pre-hook that hands the head an empty slice instead (so the model's forward computes no
    logits at all). None when the model did not call its head on exactly those positions."""
    shift_mask, keep = _keep_mask(labels)
    targets = labels[:, 1:][shift_mask]
    with head_inputs(head) as seen:
        try:
            model(**inputs, logits_to_keep=keep, use_cache=False)
        except (TypeError, IndexError):
            seen.clear()
    if len(seen) != 1 or seen[0].numel() != targets.numel() * head.in_features:
        model._quartet_full_logits = True
        return None
    return seen[0].reshape(-1, head.in_features), targets, shift_mask


def _counted_logprobs(
    model: torch.nn.Module, inputs: dict[str, Any], labels: torch.Tensor, impl: str, chunk_tokens: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logp [N], correct [N], mask [B, T-1])`` at the counted positions of the forward's layout."""
    if impl not in LOGPROB_IMPLS:
        raise ValueError(f"logprob impl {impl!r} must be one of {', '.join(LOGPROB_IMPLS)}")
    head = chunkable_head(model) if impl != "full" else None
    found = labelled_hidden(model, head, inputs, labels) if head is not None else None
    if found is None:
        logits, targets, mask = labelled_logits(model, inputs, labels)
        logp = -torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
        with torch.no_grad():
            correct = logits.argmax(-1).eq(targets)
        return logp, correct, mask
    hidden, targets, mask = found
    logp, correct = head_logprobs(hidden, head, targets, impl, chunk_tokens)
    return logp, correct, mask


def batch_token_logprobs(
    model: torch.nn.Module, batch: dict[str, Any], impl: str = "chunked", chunk_tokens: int | None = None
) -> TokenLogprobs:
    """log π(y_t | x, y_<t) of a collated batch's labelled tokens, on the padded ``[R, T-1]`` grid
    whether the batch is padded or packed (a packed batch's values are put back on its rows' grid, so
    the losses see the same tensors either way). ``impl``: see the module docstring."""
    labels = batch["labels"]
    logp, correct, mask = _counted_logprobs(model, model_inputs(model, batch), labels, impl, chunk_tokens)
    grid = torch.zeros(mask.shape, dtype=logp.dtype, device=logp.device).masked_scatter(mask, logp)
    hits = torch.zeros_like(mask).masked_scatter(mask, correct)
    if is_packed(batch):
        rows = batch["row_mask"]
        grid, mask, hits = (unpack_shifted(t[0], rows) for t in (grid, mask, hits))
    return TokenLogprobs(grid, mask, hits)


def model_token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    impl: str = "chunked",
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`batch_token_logprobs` of a padded batch given as tensors: ``(logp [B, T-1] fp32, mask
    [B, T-1] bool)``, ``logp`` 0 where the mask is off."""
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    out = batch_token_logprobs(model, batch, impl)
    return out.logp, out.mask
