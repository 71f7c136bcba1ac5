"""SFT building blocks: the masked loss by hand, the LR schedule, the step count, LoRA and export."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from transformers import AutoModelForCausalLM

from algorithms.logprobs import sequence_logprobs, token_logprobs
from algorithms.losses.sft import masked_causal_lm_loss
from lightning_modules.components.optim import WarmupCosine
from tests.helpers import FAST, compose_cfg, load_weights
from train import train


def test_masked_loss_equals_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[-100, 1, -100, 3], [-100, -100, 4, 0]])
    loss, stats = masked_causal_lm_loss(logits, labels)
    logp = logits.log_softmax(-1)
    # position t predicts label t+1; counted targets: (0,1→1), (0,3→3), (1,2→4), (1,3→0)
    hand = -(logp[0, 0, 1] + logp[0, 2, 3] + logp[1, 1, 4] + logp[1, 2, 0]) / 4
    assert torch.allclose(loss, hand)
    assert int(stats["tokens"]) == 4
    tok, mask = token_logprobs(logits, labels)
    assert mask.tolist() == [[True, False, True], [False, True, True]]
    assert torch.allclose(tok[0, 2], logp[0, 2, 3]) and tok[0, 1] == 0
    seq, n = sequence_logprobs(logits, labels)
    assert torch.allclose(seq[1], logp[1, 1, 4] + logp[1, 2, 0]) and n.tolist() == [2, 2]
    with pytest.raises(ValueError, match="no token with a label"):
        masked_causal_lm_loss(logits, torch.full_like(labels, -100))


def test_warmup_cosine_values():
    f = WarmupCosine(warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    assert [f(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


@pytest.mark.parametrize("accumulate", [1, 3])
def test_total_steps_match_lightning_estimate(tmp_path, accumulate):
    cfg = compose_cfg(
        [
            "logger=none",
            "callbacks=none",
            "trainer.max_epochs=2",
            f"trainer.accumulate_grad_batches={accumulate}",
            "data.batch_size=32",
            *FAST,
        ],
        tmp_path,
    )
    module, dm = instantiate(cfg.module), instantiate(cfg.data)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    trainer.strategy.connect(module)
    module.trainer = trainer
    trainer._data_connector.attach_data(module, datamodule=dm)
    ours = module.total_training_steps()
    assert ours == trainer.estimated_stepping_batches


def test_lora_trains_adapters_only_and_exports_merged(tmp_path, tiny_hf_dir):
    cfg = compose_cfg(
        [
            "experiment=sft_hf",
            f"model.pretrained={tiny_hf_dir}",
            "model.lora.enabled=true",
            "model.lora.r=4",
            "debug=default",
            "logger=none",
            *FAST,
        ],
        tmp_path,
    )
    train(cfg)
    weights = load_weights(tmp_path / "checkpoints" / "last.ckpt")
    base = AutoModelForCausalLM.from_pretrained(tiny_hf_dir)
    module = instantiate(cfg.module)
    module.configure_model()
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    module.load_state_dict(weights)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf_model")
    assert not any("lora" in k for k in exported.state_dict())
    ids = torch.tensor([[1, 4, 50, 60, 70]])
    with torch.no_grad():
        ours = module.eval()(ids)
        merged = exported.eval()(ids).logits
        untouched = base.eval()(ids).logits
    assert torch.allclose(ours, merged, atol=1e-5)
    assert not torch.allclose(merged, untouched, atol=1e-6), "the adapter was trained and merged"
    L.seed_everything(0)


def test_head_on_counted_positions_only_gives_the_full_logits_loss(tokenizer):
    """SFT training runs the LM head on the counted positions only (``labelled_logits``); its loss, token
    count and hits equal the full-logits ``masked_causal_lm_loss``."""
    from algorithms.logprobs import labelled_logits
    from algorithms.losses.sft import selected_tokens_loss
    from tests.inference_helpers import tiny_llama

    model = tiny_llama(len(tokenizer), seed=0, hidden=32)
    ids = torch.randint(0, len(tokenizer), (3, 12))
    labels = ids.clone()
    labels[0, :5] = -100
    labels[1, 3:9] = -100
    labels[2, :] = -100
    labels[2, 7] = ids[2, 7]
    logits, targets, mask = labelled_logits(
        model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels
    )
    full = model(input_ids=ids).logits
    assert logits.shape == (int(mask.sum()), len(tokenizer)) and torch.equal(targets, labels[:, 1:][mask])
    torch.testing.assert_close(logits, full[:, :-1][mask], rtol=1e-5, atol=1e-5)
    loss, stats = selected_tokens_loss(logits, targets)
    ref, ref_stats = masked_causal_lm_loss(full, labels)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    assert int(stats["tokens"]) == int(ref_stats["tokens"]) and int(stats["correct"]) == int(
        ref_stats["correct"]
    )
    # the default path: the head chunk by chunk on the counted positions, never the [N, V] logits
    from algorithms.logprobs import batch_token_logprobs, masked_nll

    chunked = batch_token_logprobs(
        model, {"input_ids": ids, "attention_mask": None, "labels": labels}, "chunked", 3
    )
    torch.testing.assert_close(masked_nll(chunked.logp, chunked.mask), ref, rtol=1e-5, atol=1e-6)
    assert int(chunked.correct.sum()) == int(ref_stats["correct"])
