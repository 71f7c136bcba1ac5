"""RLMECDataModule (datamodules/rlmec_token_data.py): exact masks and per-token layout, and bad-input errors."""

from __future__ import annotations

import pytest
import torch

from datamodules.rlmec_token_data import RLMECCollator, RLMECDataModule
from tests.rlmec_fixtures import ROOT, rl_records, write_jsonl
from utils.errors import DataError


def make_dm(path, **kw) -> RLMECDataModule:
    dm = RLMECDataModule(
        path=str(path), tokenizer=str(ROOT / "assets" / "tokenizer"), batch_size=3, shuffle=False, **kw
    )
    dm.setup("fit")
    return dm


def test_collator_masks_and_per_token_fields_token_by_token():
    feats = [
        {"prompt_ids": [1, 2, 3], "response_ids": [4, 5], "rewards": [0.1, -0.1], "ref_logps": [-1.0, -2.0],
         "rewrite_ids": [4, 6, 7], "weights": [0.5, 1.0, 1.0], "correct": False},
        {"prompt_ids": [8], "response_ids": [9, 10, 11], "rewards": [0.2, 0.3, 0.4], "ref_logps": [-0.5, -0.6, -0.7],
         "rewrite_ids": [], "weights": [], "correct": True},
    ]  # fmt: skip
    b = RLMECCollator(pad_id=0)(feats)
    # originals first, then rewrites; the longest row (prompt 3 + rewrite 3) sets the width
    assert b["input_ids"].tolist() == [
        [1, 2, 3, 4, 5, 0],
        [8, 9, 10, 11, 0, 0],
        [1, 2, 3, 4, 6, 7],
        [8, 0, 0, 0, 0, 0],
    ]
    assert b["labels"].tolist()[0] == [-100, -100, -100, 4, 5, -100]
    assert b["labels"].tolist()[1] == [-100, 9, 10, 11, -100, -100]
    assert b["labels"].tolist()[2] == [-100, -100, -100, 4, 6, 7]
    assert b["labels"].tolist()[3] == [-100] * 6
    assert b["attention_mask"].tolist() == [[1] * 5 + [0], [1] * 4 + [0] * 2, [1] * 6, [1] + [0] * 5]
    expected_rewards = torch.tensor([[0, 0, 0, 0.1, -0.1, 0], [0, 0.2, 0.3, 0.4, 0, 0]])
    assert torch.equal(b["rewards"], expected_rewards) and b["rewards"].dtype == torch.float32
    assert torch.equal(b["ref_logps"][1], torch.tensor([0, -0.5, -0.6, -0.7, 0, 0]))
    assert b["weights"].tolist() == [[0, 0, 0, 0.5, 1.0, 1.0], [0] * 6]
    assert b["correct"].tolist() == [False, True]
    # every per-token value sits exactly where its token is labelled
    assert torch.equal(b["rewards"].ne(0), b["labels"][:2].ne(-100) & b["rewards"].ne(0))
    assert torch.equal(b["weights"].ne(0), b["labels"][2:].ne(-100))


def test_datamodule_reads_records_and_batches_them(tmp_path, tokenizer):
    rows = rl_records(tokenizer, 4)
    dm = make_dm(write_jsonl(tmp_path / "rl.jsonl", rows))
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 6 and batch["correct"].tolist() == [True, False, True]
    for i in range(3):
        n_p, resp = len(rows[i]["prompt_ids"]), rows[i]["response_ids"]
        assert batch["labels"][i, n_p : n_p + len(resp)].tolist() == resp
        assert (batch["labels"][i, :n_p] == -100).all() and (
            batch["labels"][i, n_p + len(resp) :] == -100
        ).all()
        assert batch["rewards"][i, n_p : n_p + len(resp)].tolist() == pytest.approx(rows[i]["rewards"])


def test_val_split_keeps_problems_together(tmp_path, tokenizer):
    rows = rl_records(tokenizer, 4)
    rows = rows + [dict(r, id=r["id"] + "-b") for r in rows]  # two samples per problem
    dm = make_dm(write_jsonl(tmp_path / "rl.jsonl", rows), val_fraction=0.25)
    train_p = {r["problem_id"] for r in dm.train_dataset}
    val_p = {r["problem_id"] for r in dm.val_dataset}
    assert len(val_p) == 1 and not train_p & val_p and len(dm.val_dataset) == 2


def test_truncation_cuts_per_token_fields_with_their_tokens(tmp_path, tokenizer):
    rows = rl_records(tokenizer, 1)
    n_p = len(rows[0]["prompt_ids"])
    dm = make_dm(write_jsonl(tmp_path / "rl.jsonl", rows), max_length=n_p + 5)
    (rec,) = dm.train_dataset
    assert rec["response_ids"] == rows[0]["response_ids"][:5] and rec["rewards"] == rows[0]["rewards"][:5]
    assert len(rec["weights"]) == len(rec["rewrite_ids"]) == 5
    with pytest.raises(DataError, match=r"rl2\.jsonl:1: .* exceed data.max_length"):
        make_dm(write_jsonl(tmp_path / "rl2.jsonl", rows), max_length=n_p + 5, truncation="error")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("ref_logps"), r"rl\.jsonl:2: missing field\(s\) 'ref_logps'"),
        (
            lambda r: r["rewards"].pop(),
            r"rl\.jsonl:2: field 'rewards' has \d+ values but 'response_ids' has \d+ tokens",
        ),
        (
            lambda r: r["weights"].append(0.5),
            r"rl\.jsonl:2: field 'weights' has \d+ values but 'rewrite_ids'",
        ),
        (
            lambda r: r["response_ids"].append(10**6),
            r"rl\.jsonl:2: field 'response_ids' has token id 1000000, outside",
        ),
        (lambda r: r.update(correct="yes"), r"rl\.jsonl:2: field 'correct' must be true or false"),
        (lambda r: r.update(prompt_ids=[]), r"rl\.jsonl:2: field 'prompt_ids' is empty"),
        (
            lambda r: r["ref_logps"].__setitem__(0, float("nan")),
            r"rl\.jsonl:2: field 'ref_logps' has a non-finite",
        ),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, tokenizer, change, message):
    rows = rl_records(tokenizer, 2)
    change(rows[1])
    with pytest.raises(DataError, match=message):
        make_dm(write_jsonl(tmp_path / "rl.jsonl", rows))
