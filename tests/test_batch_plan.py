"""Planned batches (token budget, length grouping): the plans by hand, exact resume, equal steps per rank."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from datamodules.batch_plan import PlannedBatchSampler, budget_batches, grouped_batches
from tests.helpers import compose_cfg

LENGTHS = [[5], [3], [4], [6], [2]]


def test_budget_batches_by_hand():
    # packed: cost = Σ lengths: 5+3 | 4+6 | 2
    assert budget_batches(range(5), LENGTHS, 10, packed=True) == [[0, 1], [2, 3], [4]]
    # padded: cost = rows × longest: 2×5 | 1×4 (2×6 > 10) | 1×6 (2×6 > 10) | 2
    assert budget_batches(range(5), LENGTHS, 10, packed=False) == [[0, 1], [2], [3], [4]]
    # a pair adds two rows: [3+1, 3+2] and [2+2, 2+2]: packed 9 + 8 > 12
    assert budget_batches([0, 1], [[4, 5], [4, 4]], 12, packed=True) == [[0], [1]]
    # an example over the budget on its own is a batch of one
    assert budget_batches([3, 1], LENGTHS, 4, packed=True) == [[3], [1]]


def test_grouped_batches_sort_each_megabatch_longest_first():
    assert grouped_batches([0, 1, 2, 3, 4], LENGTHS, 2) == [[3, 0], [2, 1], [4]]


def sampler(**kw) -> PlannedBatchSampler:
    lengths = [[(7 * i) % 13 + 1] for i in range(40)]
    return PlannedBatchSampler(lengths, 4, shuffle=True, seed=3, **{"max_tokens": 20, "packed": True, **kw})


def test_resume_mid_epoch_gives_the_same_batches():
    full = sampler()
    epoch0, epoch1 = list(full), None
    full.set_epoch(1)
    epoch1 = list(full)
    assert epoch0 != epoch1 and sorted(i for b in epoch0 for i in b) == list(range(40))
    first = sampler()
    it = iter(first)
    head = [next(it), next(it), next(it)]
    resumed = sampler()
    resumed.load_state_dict(first.state_dict())
    assert first.state_dict() == {"epoch": 0, "batches": 3}
    assert head + list(resumed) == epoch0
    resumed.set_epoch(1)
    assert list(resumed) == epoch1
    grouped = sampler(max_tokens=None, group_by_length=True)
    it = iter(grouped)
    head = [next(it)]
    again = sampler(max_tokens=None, group_by_length=True)
    again.load_state_dict(grouped.state_dict())
    assert head + list(again) == list(sampler(max_tokens=None, group_by_length=True))


def test_ranks_get_the_same_number_of_batches_and_cover_the_plan():
    ranks = [list(sampler(rank=r, world_size=3)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1
    assert {i for r in ranks for b in r for i in b} == set(range(40))


def test_packed_token_budget_loader_resumes_exactly(tmp_path):
    cfg = compose_cfg(["data.packing=true", "data.max_tokens_per_batch=400", "print_config=false"], tmp_path)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    loader = dm.train_dataloader()
    every = list(loader)
    assert all(int(b["row_mask"].sum()) <= 400 or b["row_mask"].shape[0] == 1 for b in every)
    assert len(every) == dm.num_train_batches()
    first = dm.train_dataloader()
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(every) - 3
    for a, b in zip(rest, every[3:]):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])


@pytest.mark.slow
def test_packed_budget_training_resumes_bitwise(tmp_path):
    """train.py with packing and a token budget: crash after step 3, resume from last.ckpt, and the
    weights equal an uninterrupted run's bit for bit (the planned batches continue where they were)."""
    from tests.helpers import FAST, assert_bitwise_equal, crash_at, load_weights
    from train import train

    job = [
        "debug=default",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "data.packing=true",
        "data.max_tokens_per_batch=700",
        "trainer.max_steps=6",
        "trainer.limit_val_batches=0",
        "callbacks.model_checkpoint.every_n_train_steps=3",
        "logger=none",
        *FAST,
    ]
    train(compose_cfg(job, tmp_path / "a"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_cfg(job + crash_at(3), tmp_path / "b"))
    train(compose_cfg([*job, "ckpt_path=last"], tmp_path / "b"))
    assert_bitwise_equal(
        load_weights(tmp_path / "b/checkpoints/last.ckpt"), load_weights(tmp_path / "a/checkpoints/last.ckpt")
    )


def test_bad_batch_settings_are_config_errors(tmp_path):
    from datamodules.chat import ChatDataModule
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match="exclude each other"):
        ChatDataModule(path="x.jsonl", tokenizer="t", group_by_length=True, max_tokens_per_batch=100)
    with pytest.raises(ConfigError, match="max_tokens_per_batch=0"):
        ChatDataModule(path="x.jsonl", tokenizer="t", max_tokens_per_batch=0)


def test_batch_planning_is_refused_for_a_data_module_without_example_lengths():
    from datamodules.base import TokenDataModule
    from utils.errors import ConfigError

    class NoLengths(TokenDataModule):
        pass

    for setting in ({"group_by_length": True}, {"max_tokens_per_batch": 512}):
        with pytest.raises(ConfigError, match="NoLengths has no example lengths to plan batches by"):
            NoLengths(batch_size=2, **setting)
    assert NoLengths(batch_size=2).group_by_length is False
