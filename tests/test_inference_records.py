"""Reasoning record loading/validation and the bundled reasoning data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from reasoning.questions import ReasoningDataError, load_reasoning_records, split_answer
from scripts.make_reasoning_data import main as make_data
from tests.inference_helpers import REPO

DATA = REPO / "data" / "reasoning"


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_gsm8k_answer_and_types(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "gsm.jsonl",
        [
            {
                "question": "Natalia sold 48 clips...",
                "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 1,072",
            },
            {"question": "Is 3 odd?", "answer": "Yes"},
            {
                "question": "Pick",
                "choices": ["red", "blue", "green"],
                "answer": "(C)",
                "id": "mc1",
                "task": "colors",
            },
            {"question": "Pick again", "choices": ["red", "blue"], "answer": "blue"},
            {"question": "Capital of France?", "answer": "Paris"},
            {"question": "Half of 7?", "answer": 3.5},
        ],
    )
    recs = load_reasoning_records(f)
    assert recs[0].gold == "1072" and recs[0].rationale == "Natalia sold 48/2 = 24 clips."
    assert recs[0].answer_type == "number" and recs[0].id == "gsm-1" and recs[0].task == "gsm"
    assert (recs[1].answer_type, recs[1].gold) == ("yesno", "yes")
    assert (recs[2].answer_type, recs[2].gold, recs[2].id, recs[2].task, recs[2].num_choices) == (
        "choice",
        "C",
        "mc1",
        "colors",
        3,
    )
    assert recs[3].gold == "B"  # an option's text maps to its letter
    assert (recs[4].answer_type, recs[4].gold) == ("text", "paris")
    assert recs[5].gold == "3.5"
    assert split_answer("so 5\n#### 5") == ("5", "so 5")
    assert len(load_reasoning_records(f, limit=2)) == 2


@pytest.mark.parametrize(
    "rows,match",
    [
        ([{"question": "q"}], r"bad\.jsonl:1: missing field 'answer'"),
        (
            [{"question": "q", "answer": "1"}, '{"question": "q2", "answer": '],
            r"bad\.jsonl:2: malformed JSON",
        ),
        ([{"answer": "1"}], r"bad\.jsonl:1: missing field 'question'"),
        (
            [{"question": "q", "answer": "1", "choices": ["a"]}],
            r":1: field 'choices' must be a list of at least 2",
        ),
        (
            [{"question": "q", "answer": "E", "choices": ["a", "b", "c"]}],
            r":1: answer 'E' is neither a letter in ABC",
        ),
        (
            [{"question": "q", "answer": "1", "id": "x"}, {"question": "r", "answer": "2", "id": "x"}],
            r":2: duplicate id 'x'",
        ),
        ([{"question": "q", "answer": "1", "answer_type": "date"}], r":1: answer_type 'date'"),
        (
            [{"question": "q", "answer": "abc", "answer_type": "number"}],
            r":1: answer 'abc' is not a valid 'number'",
        ),
        ([["not", "an", "object"]], r":1: expected a JSON object"),
        ([], r"no records found"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path: Path, rows: list, match: str) -> None:
    f = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ReasoningDataError, match=match):
        load_reasoning_records(f)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_reasoning_records("/nonexistent/x.jsonl")


def test_bundled_data_loads_and_is_small() -> None:
    sizes = {"train": 2000, "test": 200, "mixed_train": 300, "mixed_test": 180}
    questions: dict[str, set[str]] = {}
    for name, n in sizes.items():
        path = DATA / f"{name}.jsonl"
        assert path.stat().st_size < 1_000_000
        recs = load_reasoning_records(path)
        assert len(recs) == n
        questions[name] = {r.question for r in recs}
        if name.startswith("mixed"):
            assert Counter(r.task for r in recs).keys() == {"arith", "arith_mc", "yesno"}
            assert {r.answer_type for r in recs} == {"number", "choice", "yesno"}
        else:
            assert all(r.answer_type == "number" and r.rationale for r in recs)
    train = questions["train"] | questions["mixed_train"]
    assert not train & (questions["test"] | questions["mixed_test"])  # no test question leaks into training


def test_data_script_is_deterministic(tmp_path: Path) -> None:
    args = ["--train", "30", "--test", "10", "--mixed-train-per-task", "5", "--mixed-test-per-task", "5"]
    make_data(["--out", str(tmp_path / "a"), *args])
    make_data(["--out", str(tmp_path / "b"), *args])
    for name in ("train", "test", "mixed_train", "mixed_test"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_text() == (
            tmp_path / "b" / f"{name}.jsonl"
        ).read_text()
    # The bundled test split does not depend on the train size (test sets are generated first).
    bundled = (DATA / "test.jsonl").read_text().splitlines()[:10]
    assert (tmp_path / "a" / "test.jsonl").read_text().splitlines() == bundled
