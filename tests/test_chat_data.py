"""ChatDataModule: input formats, validation errors, splitting, padding and the resumable sampler."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from datamodules.base import split_indices
from datamodules.chat import ChatDataModule
from datamodules.collate import PadCollator
from datamodules.resumable_sampler import ResumableSampler
from tests.conftest import ROOT
from utils.errors import ConfigError, DataError

TOKENIZER = str(ROOT / "assets" / "tokenizer")
OPENAI = {"messages": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"}]}
SHAREGPT = {"conversations": [{"from": "human", "value": "Hi."}, {"from": "gpt", "value": "Hello!"}]}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def make_dm(path, **kw):
    return ChatDataModule(path=str(path), tokenizer=TOKENIZER, val_fraction=kw.pop("val_fraction", 0.0), **kw)


def test_openai_sharegpt_parquet_json_and_saved_dataset_agree(tmp_path):
    import datasets

    jsonl = write_jsonl(tmp_path / "a.jsonl", [OPENAI] * 3)
    share = write_jsonl(tmp_path / "b.jsonl", [SHAREGPT] * 3)
    js = tmp_path / "c.json"
    js.write_text(json.dumps([OPENAI] * 3))
    pqf = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([OPENAI] * 3), pqf)
    saved = tmp_path / "saved"
    datasets.Dataset.from_list([SHAREGPT] * 3).save_to_disk(str(saved))
    results = []
    for p in (jsonl, share, js, pqf, saved):
        dm = make_dm(p)
        dm.setup("fit")
        results.append((dm.train_dataset["input_ids"], dm.train_dataset["labels"]))
    assert all(r == results[0] for r in results)
    assert len(results[0][0]) == 3


def test_train_val_split_is_seeded_and_disjoint():
    dm = ChatDataModule(
        path=str(ROOT / "data/chat/dialogues.jsonl"), tokenizer=TOKENIZER, val_fraction=0.1, seed=3
    )
    dm.setup("fit")
    assert len(dm.val_dataset) == 60 and len(dm.train_dataset) == 540
    dm2 = ChatDataModule(
        path=str(ROOT / "data/chat/dialogues.jsonl"), tokenizer=TOKENIZER, val_fraction=0.1, seed=3
    )
    dm2.setup("fit")
    assert dm.val_dataset["input_ids"] == dm2.val_dataset["input_ids"]
    tr, va = split_indices(600, 0.1, seed=3)
    assert not set(tr) & set(va) and len(set(tr) | set(va)) == 600
    assert split_indices(600, 0.1, seed=4)[1] != va


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (['{"messages": [}'], r"bad\.jsonl:1: malformed JSON"),
        ([OPENAI, '{"messages": [{"role": "user", "content": "x"}'], r"bad\.jsonl:2: malformed JSON"),
        (
            [{"messages": [{"role": "robot", "content": "x"}]}],
            r"bad\.jsonl:1: turn 0 has unknown role 'robot'",
        ),
        (
            [{"conversations": [{"from": "alien", "value": "x"}]}],
            r"bad\.jsonl:1: turn 0 has unknown role 'alien'",
        ),
        ([OPENAI, {"messages": []}], r"bad\.jsonl:2: empty conversation"),
        ([{"text": "hello"}], r"bad\.jsonl:1: no 'messages' .* or 'conversations'"),
        (
            [{"messages": [{"role": "user", "content": "only a question"}]}],
            r"bad\.jsonl:1: the loss mask is all zero",
        ),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, rows, match):
    dm = make_dm(write_jsonl(tmp_path / "bad.jsonl", rows))
    with pytest.raises(DataError, match=match):
        dm.setup("fit")


def test_missing_file_and_bad_settings(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        make_dm(tmp_path / "nope.jsonl").setup("fit")
    with pytest.raises(ConfigError) as e:
        make_dm(tmp_path / "x.jsonl", loss_roles=["robot"], turns="first", truncation="middle")
    assert len(e.value.problems) == 3


def test_skip_policy_counts_empty_masks(tmp_path):
    rows = [OPENAI, {"messages": [{"role": "user", "content": "no answer"}]}, OPENAI]
    dm = make_dm(write_jsonl(tmp_path / "mixed.jsonl", rows), on_empty_mask="skip")
    dm.setup("fit")
    assert len(dm.train_dataset) == 2 and dm.skipped == 1


def test_pad_collator_dynamic_padding():
    batch = PadCollator(pad_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert PadCollator(0, pad_to_multiple_of=4)([{"input_ids": [1], "labels": [1]}])["input_ids"].shape == (
        1,
        4,
    )


def test_sampler_shards_ranks_and_resumes_mid_epoch():
    shards = [list(ResumableSampler(10, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    assert set().union(*map(set, shards)) == set(range(10))
    s = ResumableSampler(10, seed=1)
    s.set_epoch(2)
    full = list(s)
    it = iter(s)
    first = [next(it) for _ in range(4)]
    state = s.state_dict()
    assert state == {"epoch": 2, "yielded": 4}
    fresh = ResumableSampler(10, seed=1)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)
    assert first + list(fresh) == full
    fresh.set_epoch(3)  # the next epoch starts from its beginning, in the order of (seed, 3)
    assert list(fresh) == ResumableSampler(10, seed=1).order(3)
    assert full != ResumableSampler(10, seed=1).order(3)


def test_loader_yields_padded_batches():
    dm = ChatDataModule(path=str(ROOT / "data/chat/dialogues.jsonl"), tokenizer=TOKENIZER, batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    lengths = batch["attention_mask"].sum(1)
    assert int(lengths.max()) == batch["input_ids"].shape[1]
    assert torch.all(batch["labels"][batch["attention_mask"] == 0] == -100)
