"""Issue 21, "Reading files" and "Records": a UTF-8 byte-order mark is read by every reader (chat,
preference, reasoning, MT-Bench, text corpora), ``data.path`` glob patterns read every matching file in
sorted order, and the values the readers refuse (a list as MT-Bench ``question_id``, a non-finite gold
answer) are one error naming file:line."""

from __future__ import annotations

import json

import pytest

from utils.errors import QuartetError

BOM = b"\xef\xbb\xbf"
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


def _bom_jsonl(path, rows):
    path.write_bytes(BOM + "".join(json.dumps(r) + "\n" for r in rows).encode())
    return path


def test_a_byte_order_mark_is_read_by_every_reader(tmp_path):
    from datamodules.lm_corpus import read_documents
    from datamodules.preference_format import normalise_pair
    from evaluation.mt_bench.fastchat_format import read_questions
    from reasoning.questions import load_reasoning_records
    from utils.record_files import read_records

    chat = read_records(_bom_jsonl(tmp_path / "chat.jsonl", [CHAT, CHAT]))
    assert [r.data for r in chat] == [CHAT, CHAT] and chat[1].location.endswith("chat.jsonl:2")
    (tmp_path / "chat.json").write_bytes(BOM + json.dumps([CHAT]).encode())
    assert [r.data for r in read_records(tmp_path / "chat.json")] == [CHAT]
    pair = {"messages": CHAT["messages"][:1], "chosen": "yo", "rejected": "no", "neg_type": "neglect"}
    (rec,) = read_records(_bom_jsonl(tmp_path / "pairs.jsonl", [pair]))
    assert normalise_pair(rec).rejected == "no"
    q = {"question": "What is 2 + 3?", "answer": "#### 5"}
    assert [r.gold for r in load_reasoning_records(_bom_jsonl(tmp_path / "q.jsonl", [q]))] == ["5"]
    mt = {"question_id": 81, "category": "writing", "turns": ["Write a poem."]}
    assert [x.question_id for x in read_questions(_bom_jsonl(tmp_path / "question.jsonl", [mt]))] == [81]
    (tmp_path / "corpus.txt").write_bytes(BOM + b"first document\nsecond document\n")
    assert read_documents(str(tmp_path / "corpus.txt")) == ["first document", "second document"]


def test_a_glob_data_path_reads_every_matching_file_in_sorted_order(tmp_path):
    from datamodules.base import file_identity
    from datamodules.lm_corpus import read_documents
    from tests.helpers import compose_cfg
    from utils.config_validation import validate_train_config
    from utils.record_files import read_records

    for name, text in (("part-2.jsonl", "b"), ("part-1.jsonl", "a"), ("other.jsonl", "x")):
        (tmp_path / name).write_text(json.dumps({"text": text}) + "\n")
    pattern = str(tmp_path / "part-*.jsonl")
    records = read_records(pattern)
    assert [r.data["text"] for r in records] == ["a", "b"]
    assert [r.location for r in records] == [f"{tmp_path}/part-1.jsonl:1", f"{tmp_path}/part-2.jsonl:1"]
    assert read_documents(pattern) == ["a", "b"]
    before = file_identity(pattern)
    (tmp_path / "part-3.jsonl").write_text(json.dumps({"text": "c"}) + "\n")
    assert file_identity(pattern) != before  # a new matching file invalidates the token cache
    validate_train_config(compose_cfg([f"data.path={pattern}"], tmp_path))  # no "file not found"
    with pytest.raises(QuartetError, match=r"data.path=.*nothing-\*.jsonl: no file matches this pattern"):
        validate_train_config(compose_cfg([f"data.path={tmp_path}/nothing-*.jsonl"], tmp_path))


def test_question_ids_and_gold_answers_that_are_refused(tmp_path):
    from evaluation.mt_bench.fastchat_format import read_answers, read_questions
    from reasoning.questions import load_reasoning_records

    q = tmp_path / "question.jsonl"
    q.write_text(json.dumps({"question_id": [1, 2], "turns": ["hi"]}) + "\n")
    with pytest.raises(
        QuartetError, match=r"question.jsonl:1: 'question_id' must be an integer or a string, got \[1, 2\]"
    ):
        read_questions(q)
    a = tmp_path / "answers.jsonl"
    a.write_text(json.dumps({"question_id": {"id": 1}, "choices": [{"turns": ["x"]}]}) + "\n")
    with pytest.raises(QuartetError, match=r"answers.jsonl:1: 'question_id' must be an integer or a string"):
        read_answers(a)
    for value, shown in (("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")):
        r = tmp_path / "gold.jsonl"
        r.write_text('{"question": "How many?", "answer": ' + value + "}\n")
        with pytest.raises(ValueError, match=f"gold.jsonl:1: field 'answer' is {shown}, not a finite number"):
            load_reasoning_records(r)


def test_a_config_string_too_long_for_a_file_name_is_no_path_not_an_oserror():
    from utils.data_paths import expand_pattern, path_exists
    from utils.errors import DataError

    long_value = "x" * 5000 + ".jsonl"
    assert path_exists(long_value) is False and path_exists("a\0b") is False
    assert path_exists(__file__) is True
    with pytest.raises(DataError, match="no file matches this pattern"):
        expand_pattern("[" + "y" * 5000)
