"""Reasoning questions (files, save_to_disk datasets with renamed columns, rank shards) and the reasoning
SFT data (the user turn is eval's prompt, the loss is on the rationale and the answer statement)."""

from __future__ import annotations

import json
import re

import datasets
import pytest

from datamodules.reasoning import ReasoningQuestionDataModule, load_questions, shard
from datamodules.reasoning_sft import ReasoningSFTDataModule
from reasoning.prompts import PromptSettings, build_cot_prompt
from tests.conftest import ROOT
from utils.errors import ConfigError, DataError

TOKENIZER = str(ROOT / "assets" / "tokenizer")


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_jsonl_questions_gsm8k_answers_and_choices(tmp_path) -> None:
    path = _jsonl(
        tmp_path / "q.jsonl",
        [
            {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7.\n#### 7"},
            {"question": "2 + 3?", "choices": ["4", "5", "6"], "answer": "5", "task": "mc", "id": "m1"},
        ],
    )
    a, b = load_questions(path)
    assert (a.id, a.gold, a.answer_type, a.task, a.rationale) == ("q-1", "7", "number", "q", "3 + 4 = 7.")
    assert (b.id, b.gold, b.answer_type, b.task, b.choices) == ("m1", "B", "choice", "mc", ("4", "5", "6"))
    assert [r.id for r in load_questions(path, limit=1)] == ["q-1"]


def test_hf_dataset_folder_with_renamed_columns(tmp_path) -> None:
    ds = datasets.Dataset.from_list(
        [
            {"problem": "What is 6 * 7?", "solution": "6 * 7 = 42 #### 42", "opts": None, "uid": "x1"},
            {
                "problem": "Pick the even one.",
                "solution": "C",
                "opts": {"text": ["3", "5", "8"], "label": ["A", "B", "C"]},
                "uid": "x2",
            },
        ]
    )
    folder = tmp_path / "saved"
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(folder))
    fields = {"question": "problem", "answer": "solution", "choices": "opts", "id": "uid", "task": None}
    recs = load_questions(str(folder), split="validation", fields=fields, default_task="toy")
    assert [(r.id, r.gold, r.answer_type, r.task) for r in recs] == [
        ("x1", "42", "number", "toy"),
        ("x2", "C", "choice", "toy"),
    ]
    assert recs[1].choices == ("3", "5", "8")  # ARC-style {"text", "label"} choices
    with pytest.raises(DataError, match="missing field 'answer'.*set data.fields.answer=<column>"):
        load_questions(str(folder), split="validation", fields={"question": "problem"})
    with pytest.raises(ConfigError, match="data.fields.gold is not a record field"):
        load_questions(str(folder), split="validation", fields={"gold": "solution"})


def test_bad_question_files_name_the_record(tmp_path) -> None:
    no_answer = _jsonl(tmp_path / "na.jsonl", [{"question": "Q?", "answer": "1"}, {"question": "Q2?"}])
    with pytest.raises(DataError, match=r"na\.jsonl:2: missing field 'answer'"):
        load_questions(no_answer)
    dup = _jsonl(tmp_path / "dup.jsonl", [{"id": "a", "question": "Q", "answer": "1"}] * 2)
    with pytest.raises(DataError, match=r"dup\.jsonl:2: duplicate id 'a'"):
        load_questions(dup)
    with pytest.raises(DataError, match="data file not found"):
        load_questions(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ConfigError, match="data.batch_size=0"):
        ReasoningQuestionDataModule(no_answer, batch_size=0)


def test_rank_shards_partition_the_questions() -> None:
    items = list(range(11))
    shards = [shard(items, r, 3) for r in range(3)]
    assert sorted(x for s in shards for x in s) == items
    assert [len(s) for s in shards] == [4, 4, 3]
    assert shard(items, 0, 1) == items


def test_question_datamodule_batches_are_question_lists() -> None:
    dm = ReasoningQuestionDataModule(str(ROOT / "data/reasoning/test.jsonl"), limit=10, batch_size=4)
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [r.id for b in batches for r in b] == dm.question_ids[:10]


def test_reasoning_sft_renders_eval_prompt_and_masks_the_answer(tmp_path) -> None:
    path = _jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "question": f"Leo has {i} cards and gets 2 more. How many?",
                "answer": f"{i} + 2 = {i + 2}.\n#### {i + 2}",
            }
            for i in range(10)
        ],
    )
    prompt = {"chat": True, "answer_format_known": True, "question_type_known": True}
    dm = ReasoningSFTDataModule(
        path=path, tokenizer=TOKENIZER, prompt=prompt, cache_dir=str(tmp_path / "cache"), val_fraction=0.2
    )
    dm.setup("fit")
    recs = load_questions(path)
    msgs = dm.to_messages(next(iter(_records(path))))
    assert msgs[0] == build_cot_prompt(recs[0], PromptSettings(**prompt))[0]  # eval's exact user turn
    assert msgs[1] == {"role": "assistant", "content": "0 + 2 = 2. The answer is 2."}
    example = dm.train_dataset[0]
    labels = [t for t in example["labels"] if t != -100]
    # Loss on exactly the assistant turn (the rationale, the answer statement and the end of turn).
    assert re.fullmatch(r"(\d+) \+ 2 = (\d+)\. The answer is \2\.<\|end\|>\n", dm.tokenizer.decode(labels))
    assert len(dm.train_dataset) == 8 and len(dm.val_dataset) == 2
    with pytest.raises(ConfigError, match="data.prompt.chat must be true"):
        ReasoningSFTDataModule(path=path, tokenizer=TOKENIZER, prompt={"chat": False})


def _records(path):
    from utils.record_files import read_records

    return read_records(path)
