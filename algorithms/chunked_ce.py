"""log p(target) through the LM head, chunk by chunk: the [N, V] logits never exist at once.

For hidden states h_i (the LM head's input at the N counted positions), the head W [V, H] (bias b)
and targets y_i: logp_i = z_{i,y_i} − logsumexp_v z_{i,v}, z_i = W h_i + b (the log-softmax of
METHODS.md §1's NLL, and of every sequence log-prob in §1 and §3).

Forward: per chunk of C positions, the [C, V] logits in fp32, their logsumexp, the target's logit and
the argmax (token accuracy). Only h, the targets and the N logsumexps are kept. Backward: per chunk,
the logits again and ∂logp_i/∂z_i = g_i (onehot(y_i) − softmax(z_i)), then ∂h = ∂z W and
∂W = ∂zᵀ h. Peak memory is O(C·V + N·H) instead of O(N·V); the cost is one more head matmul in the
backward (the logits are recomputed). Except for the first chunks whose softmax fits ``KEEP_ELEMENTS``
(one chunk's worth by default): their softmax(z) is kept from the forward, so a batch of at most one
chunk of counted positions (chat SFT at 2 × 256 tokens: about 300) recomputes nothing, for at most one
more chunk of memory. The gradients are bitwise the recomputed ones (the same ops on the same values).
A frozen head (LoRA) needs no ∂W: then ∂h_i/g_i is formed in the forward and the backward is one
multiply, with no recompute.

Written by hand (torch only): the per-token log-probs with any upstream gradient are what CaPO and
RLMEC need, and the fused-kernel libraries (Liger, cut-cross-entropy) are GPU-only (Triton); the
opt-in path to cut-cross-entropy is :func:`fused_token_logprobs`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from models.cpu_linear import linear, matmul, matmul_into

#: Elements of one chunk's [C, V] fp32 logits (2**25: 128 MiB); C = max(1, budget // V).
DEFAULT_CHUNK_ELEMENTS = 2**25
#: Elements of softmax(z) kept from the forward for the backward (whole chunks, the first ones), so those
#: chunks' logits are not recomputed; 0 recomputes every chunk.
KEEP_ELEMENTS = DEFAULT_CHUNK_ELEMENTS


def chunk_rows(vocab: int, chunk_tokens: int | None) -> int:
    return int(chunk_tokens) if chunk_tokens else max(1, DEFAULT_CHUNK_ELEMENTS // max(1, vocab))


def _chunk_logits(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, min_macs: int | None
) -> torch.Tensor:
    return linear(h, weight, bias, min_macs).float()


def _dlogits(logits: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """∂(Σ g_i logp_i)/∂z for one chunk: g_i (onehot(y_i) − softmax(z_i)), in fp32."""
    return _dprobs(torch.exp(logits - lse[:, None]), targets, g)


def _dprobs(probs: torch.Tensor, targets: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """:func:`_dlogits` from the chunk's softmax(z) (a new tensor; ``probs`` is left as it is)."""
    grad = probs.mul(-g[:, None])
    grad[torch.arange(len(targets), device=grad.device), targets] += g
    return grad


def autocast_state(device: str) -> torch.dtype | None:
    """The autocast dtype in force (bf16-mixed training), or None."""
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def recompute_autocast(device: str, dtype: torch.dtype | None) -> Any:
    """The forward's autocast state again for the backward's recompute, so the recomputed logits are the
    ones whose logsumexp was kept (autocast is off in a custom backward)."""
    return torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()


class ChunkedLinearLogprob(torch.autograd.Function):
    """``(logp [N] fp32, correct [N] bool) = f(hidden [N, H], weight [V, H], bias [V] | None, targets [N])``;
    ``chunk``: rows per chunk; ``keep_rows``: the first rows whose softmax is kept for the backward;
    ``min_macs``: the head's ``model.cpu_linear`` threshold (``models/cpu_linear.py``; None: ATen)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk, keep_rows=0, min_macs=None):  # noqa: ANN001, ANN205
        n = hidden.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logp)
        correct = torch.empty(n, dtype=torch.bool, device=hidden.device)
        frozen = not weight.requires_grad and (bias is None or not bias.requires_grad)
        dh = torch.empty_like(hidden) if frozen and ctx.needs_input_grad[0] else None
        keep = keep_rows if dh is None else 0
        kept = []
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            logits = _chunk_logits(hidden[s:e], weight, bias, min_macs)
            lse[s:e] = logits.logsumexp(-1)
            t = targets[s:e]
            logp[s:e] = logits.gather(1, t[:, None]).squeeze(1) - lse[s:e]
            correct[s:e] = logits.argmax(-1).eq(t)
            if dh is not None:  # ∂logp_i/∂h_i, so the backward needs no recompute
                ones = torch.ones(e - s, dtype=torch.float32, device=hidden.device)
                dz = _dlogits(logits, lse[s:e], t, ones).to(weight.dtype)
                dh[s:e] = matmul(dz, weight, min_macs).to(hidden.dtype)
            elif e <= keep:  # softmax(z), in place of the logits, for the backward
                kept.append(logits.sub_(lse[s:e, None]).exp_())
        ctx.chunk, ctx.frozen, ctx.kept, ctx.min_macs = chunk, dh is not None, len(kept), min_macs
        ctx.autocast = autocast_state(hidden.device.type)
        ctx.save_for_backward(dh if ctx.frozen else hidden, weight, bias, targets, lse, *kept)
        ctx.mark_non_differentiable(correct)
        return logp, correct

    @staticmethod
    def backward(ctx, grad_logp, _grad_correct):  # noqa: ANN001, ANN205
        saved, weight, bias, targets, lse, *kept = ctx.saved_tensors
        if ctx.frozen:
            return saved * grad_logp[:, None].to(saved.dtype), None, None, None, None, None, None
        hidden, chunk, min_macs = saved, ctx.chunk, ctx.min_macs
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        dh = torch.empty_like(hidden) if need_h else None
        dw = None  # the first chunk's product is written, later ones added: no [V, H] zero-fill
        db = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        for i, s in enumerate(range(0, hidden.shape[0], chunk)):
            e = min(hidden.shape[0], s + chunk)
            g = grad_logp[s:e].float()
            if i < len(kept):
                dz = _dprobs(kept[i], targets[s:e], g)
            else:
                with recompute_autocast(hidden.device.type, ctx.autocast):
                    logits = _chunk_logits(hidden[s:e], weight, bias, min_macs)
                dz = _dlogits(logits, lse[s:e], targets[s:e], g)
            if dh is not None:
                dh[s:e] = matmul(dz.to(weight.dtype), weight, min_macs).to(hidden.dtype)
            if need_w:
                if dw is None:
                    dw = matmul(dz.t(), hidden[s:e].float(), min_macs)
                else:  # added in place (in blocks on oneDNN): no second [V, H] buffer at the peak
                    matmul_into(dw, dz.t(), hidden[s:e].float(), min_macs, add=True)
            if db is not None:
                db += dz.sum(0)
        return (
            dh,
            None if dw is None else dw.to(weight.dtype),
            None if db is None else db.to(bias.dtype),
            None,
            None,
            None,
            None,
        )


def chunked_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_tokens: int | None = None,
    min_macs: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp [N] fp32, correct [N] bool)`` of ``targets`` under the head ``(weight, bias)`` at
    ``hidden [N, H]``, never holding more than one chunk's logits (see the module docstring).
    ``min_macs``: run the head's products on oneDNN from that size (``models/cpu_linear.py``)."""
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty + hidden.sum() * 0, torch.zeros(0, dtype=torch.bool, device=hidden.device)
    chunk = chunk_rows(weight.shape[0], chunk_tokens)
    trains = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )  # a backward may come: keep the first chunks' softmax (KEEP_ELEMENTS)
    keep = KEEP_ELEMENTS // max(1, weight.shape[0] * chunk) * chunk if trains else 0
    return ChunkedLinearLogprob.apply(hidden, weight, bias, targets, chunk, keep, min_macs)


def fused_token_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same log-probs from cut-cross-entropy's fused GPU kernel (``pip install cut-cross-entropy``),
    an opt-in (``module.logprob_impl=fused``). Its kernel gives no argmax, so ``correct`` is computed
    chunk by chunk without gradient. Untested here: there is no GPU and no Triton on this machine."""
    try:
        from cut_cross_entropy import linear_cross_entropy
    except ImportError as e:
        raise ImportError(
            "module.logprob_impl=fused needs the cut-cross-entropy package on a CUDA machine "
            "(pip install cut-cross-entropy); use logprob_impl=chunked otherwise"
        ) from e
    nll = linear_cross_entropy(hidden, weight, targets, bias=bias, reduction="none")
    with torch.no_grad():
        _, correct = chunked_token_logprobs(hidden.detach(), weight.detach(), targets, bias)
    return -nll.float(), correct
