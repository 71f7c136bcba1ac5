"""Parrot's defaults and recipes at the paper's settings (METHODS.md §1; issue #17, section 4)."""

from __future__ import annotations

import pytest

from stages.capo_negatives.corruptions import PAPER_CORRUPTIONS
from tests.helpers import compose_cfg


def test_stage_defaults_follow_the_paper(tmp_path):
    negatives = compose_cfg(["stage=capo_negatives"], tmp_path, config_name="generate").stage
    assert (
        list(negatives.corruptions)
        == list(PAPER_CORRUPTIONS)
        == ["neglect", "hallucination", "misunderstanding"]
    )
    rollout = compose_cfg(["stage=parrot_rollout"], tmp_path, config_name="generate").stage
    assert rollout.turns > 10  # the paper's sessions run past 10 turns


@pytest.mark.parametrize(
    ("experiment", "lr", "max_length", "epochs", "loss_roles"),
    [("ask_hf", 3e-5, 4096, 3, ["user"]), ("capo_hf", 1e-5, 2048, 1, None)],
)
def test_hf_recipes_reach_the_papers_batch_through_accumulation(
    tmp_path, experiment, lr, max_length, epochs, loss_roles
):
    cfg = compose_cfg([f"experiment={experiment}", "model.pretrained=/m"], tmp_path)
    assert cfg.data.batch_size * cfg.trainer.accumulate_grad_batches * cfg.trainer.devices == 32
    assert (
        cfg.module.optimizer.lr == lr
        and cfg.data.max_length == max_length
        and cfg.trainer.max_epochs == epochs
    )
    if loss_roles:
        assert list(cfg.data.loss_roles) == loss_roles and cfg.module.scheduler.schedule == "cosine"
        assert cfg.module.scheduler.warmup_ratio * epochs == pytest.approx(0.1, abs=1e-3)  # 0.1 epoch
