"""Padding-free (packed) batches: the layout by hand, and for each module that trains on chat-shaped rows
(chat SFT, the Ask model, CaPO, RLMEC) the loss, every gradient and the logged metrics of a packed batch
equal those of the same rows padded, to 1e-5; the chunked LM-head loss equals the full-logits one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from algorithms.packing import pack_padded_batch, unpack_shifted
from tests.helpers import compose_cfg
from tests.rlmec_fixtures import rl_records, write_jsonl

TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2", "print_config=false"]
TOL = 1e-5


def test_pack_layout_by_hand():
    padded = {
        "input_ids": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]),
        "labels": torch.tensor([[-100, 6, 7, -100], [8, 9, -100, -100], [-100, -100, 3, 4]]),
        "neg_type": torch.tensor([2]),
    }
    p = pack_padded_batch(padded)
    assert p["input_ids"].tolist() == [[5, 6, 7, 8, 9, 1, 2, 3, 4]]
    # each row's first label becomes -100: no row predicts the next row's first token
    assert p["labels"].tolist() == [[-100, 6, 7, -100, 9, -100, -100, 3, 4]]
    assert p["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert p["cu_seq_lens_q"].tolist() == [0, 3, 5, 9] and p["max_length_q"] == 4
    assert torch.equal(p["row_mask"], padded["attention_mask"].bool()) and p["neg_type"].tolist() == [2]
    assert "attention_mask" not in p
    # values on the shifted packed positions come back on the padded [R, T-1] grid
    shifted = torch.arange(1.0, 9.0)  # entry j belongs to packed token j+1
    assert unpack_shifted(shifted, p["row_mask"]).tolist() == [[1, 2, 0], [4, 0, 0], [6, 7, 8]]


def test_chunked_logprobs_and_grads_equal_full_cross_entropy():
    from algorithms.chunked_ce import chunked_token_logprobs

    torch.manual_seed(0)
    h = torch.randn(23, 16, requires_grad=True)
    w = torch.randn(1000, 16, requires_grad=True)
    b = torch.randn(1000, requires_grad=True)
    t = torch.randint(0, 1000, (23,))
    up = torch.randn(23)  # any upstream gradient (CaPO and RLMEC weight tokens unevenly)
    logits = torch.nn.functional.linear(h, w, b)
    ref = -torch.nn.functional.cross_entropy(logits, t, reduction="none")
    ref_grads = torch.autograd.grad((ref * up).sum(), (h, w, b))
    logp, correct = chunked_token_logprobs(h, w, t, b, chunk_tokens=5)
    grads = torch.autograd.grad((logp * up).sum(), (h, w, b))
    assert (logp - ref).abs().max() < TOL and torch.equal(correct, logits.argmax(-1).eq(t))
    for g, r in zip(grads, ref_grads):
        assert (g - r).abs().max() < TOL * max(1.0, r.abs().max().item())
    # a frozen head (LoRA): ∂h formed in the forward, no recompute, same gradient
    logp_f, _ = chunked_token_logprobs(h, w.detach(), t, b.detach(), chunk_tokens=4)
    (gh,) = torch.autograd.grad((logp_f * up).sum(), (h,))
    assert (gh - ref_grads[0]).abs().max() < TOL


def grads_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_step(run, padded: dict, module) -> None:
    """``run(batch) -> (loss, metrics)`` on the padded batch and on its packed form: equal to 1e-5."""
    results = []
    for batch in (padded, pack_padded_batch(padded)):
        module.model.zero_grad(set_to_none=True)
        loss, metrics = run(batch)
        loss.backward()
        results.append((loss.detach(), {k: v.detach() for k, v in metrics.items()}, grads_of(module.model)))
    (l0, m0, g0), (l1, m1, g1) = results
    assert abs(l0.item() - l1.item()) < TOL
    assert m0.keys() == m1.keys()
    for k in m0:
        assert (m0[k].float() - m1[k].float()).abs().max() < TOL, k
    assert g0.keys() == g1.keys() and len(g0) > 0
    for k in g0:
        assert (g0[k] - g1[k]).abs().max() < TOL, k


QWEN_EAGER = ["model.arch=qwen2", "model.attn_implementation=eager", "module.logprob_impl=full"]


# sdpa models run packed rows through sdpa_varlen (row by row); eager through transformers' block-diagonal mask
@pytest.mark.parametrize("overrides", [["data=chat"], ["data=ask"], ["data=chat", *QWEN_EAGER]])
def test_sft_and_ask_packed_equals_padded(tmp_path, overrides):
    cfg = compose_cfg([*TINY, *overrides, "data.batch_size=5"], tmp_path)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    torch.manual_seed(0)
    module = instantiate(cfg.module)
    module.configure_model()
    padded = next(iter(dm.train_dataloader()))
    assert padded["attention_mask"].float().mean() < 0.9  # there is padding to remove
    assert_same_step(module._step, padded, module)


def test_capo_packed_equals_padded(tmp_path):
    cfg = compose_cfg([*TINY, "experiment=capo_tiny", "data.batch_size=4", "module.sft_weight=0.3"], tmp_path)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    torch.manual_seed(0)
    module = instantiate(cfg.module)
    module.configure_model()
    with torch.no_grad():  # move the policy off the reference so the rewards are not all 0
        for p in module.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    padded = next(iter(dm.train_dataloader()))
    assert_same_step(module.compute_loss, padded, module)


def test_rlmec_packed_equals_padded(tmp_path, tokenizer):
    data = write_jsonl(tmp_path / "rl.jsonl", rl_records(tokenizer, 4))
    cfg = compose_cfg(
        [*TINY, "module=rlmec", "data=rlmec", f"data.path={data}", "data.batch_size=4"], tmp_path
    )
    dm = instantiate(cfg.data)
    dm.setup("fit")
    torch.manual_seed(0)
    module = instantiate(cfg.module)
    module.configure_model()
    padded = next(iter(dm.train_dataloader()))
    assert_same_step(module.compute_loss, padded, module)


def test_data_packing_switch_gives_packed_batches(tmp_path: Path):
    cfg = compose_cfg([*TINY, "data.batch_size=3", "data.packing=true"], tmp_path)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    rows = batch["row_mask"]
    assert rows.shape[0] == 3 and batch["input_ids"].shape == (1, int(rows.sum()))
    starts = batch["cu_seq_lens_q"][:-1].long()
    assert batch["position_ids"][0, starts].tolist() == [0, 0, 0]
