"""The stand-in judge of the tiny demo, through Quartet's own grading prompt."""

from __future__ import annotations

from evaluation.mt_bench.fastchat_format import read_questions
from evaluation.mt_bench.judge_prompts import BUILTIN, judge_messages
from evaluation.mt_bench.standin_judge import overlap_score, standin_judge
from tests.helpers import ROOT


def test_overlap_score_by_hand():
    ref = "The capital of Japan is Tokyo."  # content words: capital, japan, tokyo
    assert overlap_score("The capital of Japan is Tokyo.", ref) == 10
    assert overlap_score("Tokyo.", ref) == 1 + round(9 / 3)
    assert overlap_score("I like trains.", ref) == 1


def test_standin_judge_reads_our_reference_prompt():
    qs, answers, refs = (
        ["What is the capital of Japan?"],
        ["It is Tokyo, in Japan."],
        ["The capital of Japan is Tokyo."],
    )
    with_ref = judge_messages(BUILTIN["single-math-v1"], qs, answers, 1, refs)
    without = judge_messages(BUILTIN["single-v1"], qs, answers, 1)
    replies = standin_judge([with_ref, without])
    assert replies[0].endswith("Rating: [[7]]")  # tokyo + japan of 3 -> 1 + round(6) = 7
    assert "[[" not in replies[1]


def test_bundled_questions_have_a_reference_for_every_turn():
    qs = read_questions(ROOT / "data" / "mt_bench" / "question.jsonl")
    assert len(qs) == 12
    assert all(q.reference and len(q.reference) == len(q.turns) for q in qs)
    assert {q.category for q in qs} == {
        "writing",
        "roleplay",
        "extraction",
        "math",
        "coding",
        "reasoning",
        "stem",
        "humanities",
    }
