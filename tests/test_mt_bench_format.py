"""MT-Bench files in FastChat's formats, per-category temperatures, results tables and the plot."""

from __future__ import annotations

import json
import logging

import pytest

from evaluation.mt_bench.fastchat_format import (
    Question,
    answer_record,
    judgment_record,
    read_answers,
    read_questions,
    write_questions,
)
from evaluation.mt_bench.report import plot_per_turn, summarise
from evaluation.mt_bench.temperatures import DEFAULT_TEMPERATURE, temperature_for
from utils.errors import QuartetError

# FastChat's field names, as its question.jsonl, model_answer and model_judgment files use them.
FASTCHAT_ANSWER_KEYS = {"question_id", "answer_id", "model_id", "choices", "tstamp"}
FASTCHAT_JUDGMENT_KEYS = {
    "question_id",
    "model",
    "judge",
    "user_prompt",
    "judgment",
    "score",
    "turn",
    "tstamp",
}


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_questions_round_trip_with_any_number_of_turns(tmp_path):
    rows = [
        {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Now shorter."]},
        {"question_id": 111, "category": "math", "turns": ["1+1?"], "reference": ["2"]},
        {"question_id": 5, "category": "roleplay", "turns": ["a", "b", "c", "d"]},
    ]
    qs = read_questions(write(tmp_path / "question.jsonl", rows))
    assert [q.question_id for q in qs] == [81, 111, 5]
    assert qs[1].reference == ["2"] and len(qs[2].turns) == 4
    qs[0].turns.append("And in French?")
    qs[0].generated_turns.append(2)
    write_questions(tmp_path / "out.jsonl", qs)
    again = read_questions(tmp_path / "out.jsonl")
    assert again[0].turns[-1] == "And in French?" and again[0].generated_turns == [2]
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[1]) == rows[1]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question_id": 1, "category": "x", "turns": []}, "question 1 has no turns"),
        ({"question_id": 1, "category": "x"}, "missing 'turns'"),
        ({"question_id": 1, "turns": "hello"}, "'turns' must be a list of strings"),
        ("{not json", "malformed JSON line"),
    ],
)
def test_bad_questions_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path / "q.jsonl", [{"question_id": 0, "turns": ["ok"]}, row])
    with pytest.raises(QuartetError, match=f"q.jsonl:2: .*{message}"):
        read_questions(path)


def test_answer_file_round_trips_in_fastchat_fields(tmp_path):
    rec = answer_record(81, "my-model", ["first answer", "second answer"])
    assert set(rec) == FASTCHAT_ANSWER_KEYS
    assert rec["choices"] == [{"index": 0, "turns": ["first answer", "second answer"]}]
    path = write(tmp_path / "my-model.jsonl", [rec, answer_record(82, "my-model", ["x"])])
    assert read_answers(path) == {81: ["first answer", "second answer"], 82: ["x"]}
    with pytest.raises(QuartetError, match="choices\\[0\\].turns"):
        read_answers(write(tmp_path / "bad.jsonl", [{"question_id": 1, "turns": ["x"]}]))


def test_judgment_record_marks_failures_like_fastchat():
    ok = judgment_record(81, "m", ("judge-x", "quartet-single-v1"), "prompt", "Rating: [[7]]", 7.0, 1)
    bad = judgment_record(81, "m", ("judge-x", "quartet-single-v1"), "prompt", "no idea", None, 2)
    assert (
        set(ok) == FASTCHAT_JUDGMENT_KEYS
        and ok["score"] == 7.0
        and ok["judge"] == ["judge-x", "quartet-single-v1"]
    )
    assert bad["score"] == -1


def test_category_temperatures(caplog):
    assert temperature_for("writing") == 0.7 and temperature_for("math") == 0.0
    assert temperature_for("stem") == 0.1 and temperature_for("humanities") == 0.1
    assert temperature_for("coding", {"coding": 0.2}) == 0.2
    with caplog.at_level(logging.WARNING):
        assert temperature_for("poetry-slam") == DEFAULT_TEMPERATURE
    assert "unknown category 'poetry-slam'" in caplog.text


def test_summary_counts_unparseable_as_failures_not_zeros(tmp_path):
    judgments = [
        {"question_id": 1, "turn": 1, "score": 8},
        {"question_id": 1, "turn": 2, "score": -1},
        {"question_id": 2, "turn": 1, "score": 6},
        {"question_id": 2, "turn": 2, "score": 5},
    ]
    res = summarise(judgments, {1: "writing", 2: "math"})
    assert res["score"] == pytest.approx((8 + 6 + 5) / 3)
    assert res["unparseable"] == 1 and res["scored_turns"] == 3 and res["judged_turns"] == 4
    assert res["per_turn"] == {"1": {"mean": 7.0, "n": 2}, "2": {"mean": 5.0, "n": 1}}
    assert res["per_category"] == {"math": {"mean": 5.5, "n": 2}, "writing": {"mean": 8.0, "n": 1}}


def test_per_turn_plot_from_result_folders(tmp_path):
    for name, scores in (("with_capo", [7, 6.5]), ("without_capo", [6.8, 6.0])):
        folder = tmp_path / name
        folder.mkdir()
        per_turn = {str(i + 1): {"mean": s, "n": 1} for i, s in enumerate(scores)}
        (folder / "results.json").write_text(json.dumps({"model_id": name, "per_turn": per_turn}))
    png = plot_per_turn([tmp_path / "with_capo", tmp_path / "without_capo"], tmp_path / "plot.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(FileNotFoundError, match="no MT-Bench results"):
        plot_per_turn([tmp_path], tmp_path / "x.png")


def test_question_dataclass_defaults():
    q = Question(1, "writing", ["a"])
    assert q.to_json() == {"question_id": 1, "category": "writing", "turns": ["a"]}
