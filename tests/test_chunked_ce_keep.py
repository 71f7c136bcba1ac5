"""The chunked LM-head log-prob keeps the first chunks' softmax for the backward (``KEEP_ELEMENTS``):
gradients must be bitwise those of recomputing every chunk, and the kept rows only those asked for."""

from __future__ import annotations

import pytest
import torch

import algorithms.chunked_ce as cce


def _inputs() -> tuple[torch.Tensor, ...]:
    """``(hidden, weight, bias, targets, upstream gradient)``: 23 rows, a 300-token head, seed 0."""
    torch.manual_seed(0)
    h = torch.randn(23, 16, requires_grad=True)
    w = torch.randn(300, 16, requires_grad=True)
    b = torch.randn(300, requires_grad=True)
    return h, w, b, torch.randint(0, 300, (23,)), torch.randn(23)


def _grads(keep_elements: int, monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, ...]:
    monkeypatch.setattr(cce, "KEEP_ELEMENTS", keep_elements)
    h, w, b, t, up = _inputs()
    logp, correct = cce.chunked_token_logprobs(h, w, t, b, chunk_tokens=5)
    return (logp.detach(), correct, *torch.autograd.grad((logp * up).sum(), (h, w, b)))


@pytest.mark.parametrize("chunks_kept", [1, 2, 5])
def test_kept_chunks_give_bitwise_the_recomputed_gradients(chunks_kept, monkeypatch):
    recomputed = _grads(0, monkeypatch)
    kept = _grads(chunks_kept * 5 * 300, monkeypatch)  # whole chunks of 5 rows x 300 logits
    for a, b in zip(kept, recomputed):
        assert torch.equal(a, b)
    # and both equal autograd through the full logits
    h, w, b, t, up = _inputs()
    ref = -torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w, b), t, reduction="none")
    for g, r in zip(kept[2:], torch.autograd.grad((ref * up).sum(), (h, w, b))):
        assert (g - r).abs().max() < 1e-5 * max(1.0, r.abs().max().item())


def test_rows_kept_only_when_a_backward_can_come(monkeypatch):
    seen: list[int] = []
    apply = cce.ChunkedLinearLogprob.apply

    def spy(*args):
        seen.append(args[5])  # keep_rows
        return apply(*args)

    monkeypatch.setattr(cce.ChunkedLinearLogprob, "apply", spy)
    monkeypatch.setattr(cce, "KEEP_ELEMENTS", 2 * 5 * 300 + 7)  # two whole chunks (and a remainder)
    h, w, t = torch.randn(23, 16), torch.randn(300, 16, requires_grad=True), torch.randint(0, 300, (23,))
    cce.chunked_token_logprobs(h, w, t, chunk_tokens=5)
    with torch.no_grad():  # a reference pass: nothing kept
        cce.chunked_token_logprobs(h, w, t, chunk_tokens=5)
    cce.chunked_token_logprobs(h, w.detach(), t, chunk_tokens=5)  # nothing trains
    assert seen == [10, 0, 0]
