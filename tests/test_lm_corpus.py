"""LMCorpusDataModule: documents are joined with eos and packed into full blocks."""

from __future__ import annotations

import json

import pytest

from datamodules.lm_corpus import LMCorpusDataModule, read_documents
from tests.conftest import ROOT
from utils.errors import DataError

TOKENIZER = str(ROOT / "assets" / "tokenizer")


def test_packing_joins_documents_with_eos_into_full_blocks(tmp_path, tokenizer):
    docs = ["The cat is a small animal.", "Paris is the capital of France.", "1 plus 2 equals 3."] * 4
    (tmp_path / "c.txt").write_text("\n".join(docs) + "\n")
    dm = LMCorpusDataModule(str(tmp_path / "c.txt"), TOKENIZER, block_size=16, val_fraction=0.0)
    dm.setup()
    stream = []
    for d in docs:
        stream += tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(stream) // 16
    assert len(dm.train_dataset) == n
    assert [t for row in dm.train_dataset["input_ids"] for t in row] == stream[: n * 16]
    assert dm.train_dataset["labels"] == dm.train_dataset["input_ids"]


def test_jsonl_text_field_and_errors(tmp_path):
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "hello world"}) + "\n")
    assert read_documents(str(tmp_path / "c.jsonl"), text_field="body") == ["hello world"]
    with pytest.raises(DataError, match=r"c\.jsonl:1: no string field 'text'"):
        read_documents(str(tmp_path / "c.jsonl"))
    with pytest.raises(DataError, match="corpus file not found"):
        read_documents(str(tmp_path / "nope.txt"))
    dm = LMCorpusDataModule(
        str(tmp_path / "c.jsonl"), TOKENIZER, text_field="body", block_size=512, val_fraction=0.0
    )
    with pytest.raises(DataError, match="fewer tokens than one block"):
        dm.setup()


def test_bundled_corpus_has_train_and_val_blocks():
    dm = LMCorpusDataModule(
        str(ROOT / "data/corpus/train.txt"),
        TOKENIZER,
        block_size=128,
        val_path=str(ROOT / "data/corpus/val.txt"),
        batch_size=4,
    )
    dm.setup()
    assert len(dm.train_dataset) > 500 and len(dm.val_dataset) > 10
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 128) and bool(batch["attention_mask"].all())
