"""MT-Bench judge prompts: the dialogue so far, the graded turn, the reference, FastChat prompt files."""

from __future__ import annotations

import json

import pytest

from evaluation.mt_bench.judge_prompts import BUILTIN, judge_messages, load_judge_prompts, prompt_name
from utils.errors import QuartetError

QUESTIONS = ["Name three rivers in Europe.", "Which one is the longest?", "How long is it?"]
ANSWERS = ["The Danube, the Rhine and the Loire.", "The Danube.", "About 2,850 km."]


def test_prompt_names_follow_fastchat():
    assert prompt_name("writing", 1) == "single-v1"
    assert prompt_name("writing", 3) == "single-v1-multi-turn"
    assert prompt_name("math", 1) == "single-math-v1"
    assert prompt_name("coding", 2) == "single-math-v1-multi-turn"


def test_builtin_prompt_shows_the_whole_dialogue_so_far():
    msgs = judge_messages(BUILTIN["single-v1-multi-turn"], QUESTIONS, ANSWERS, turn=3)
    assert [m["role"] for m in msgs] == ["system", "user"]
    body = msgs[1]["content"]
    assert body.startswith(
        "[Conversation so far]\nUser: Name three rivers in Europe.\n\nAssistant: The Danube, the Rhine and "
        "the Loire.\n\nUser: Which one is the longest?\n\nAssistant: The Danube.\n\n"
        "[The user's latest message]\nHow long is it?\n\n[The assistant's reply to grade]\nAbout 2,850 km."
    )
    assert "[[N]]" in msgs[0]["content"]
    first = judge_messages(BUILTIN["single-v1"], QUESTIONS, ANSWERS, turn=1)[1]["content"]
    assert "(none: this is the first message)" in first


def test_reference_prompt_carries_the_turns_reference():
    refs = ["r1", "r2", "The Danube is about 2,850 km long."]
    body = judge_messages(BUILTIN["single-math-v1-multi-turn"], QUESTIONS, ANSWERS, 3, refs)[1]["content"]
    assert "[A reference answer to the latest message]\nThe Danube is about 2,850 km long.\n" in body
    assert "r2" not in body


def test_fastchat_prompt_file_with_numbered_fields(tmp_path):
    row = {
        "name": "single-v1-multi-turn",
        "type": "single",
        "system_prompt": "Judge.",
        "prompt_template": "Q1 {question_1} A1 {answer_1} Q2 {question_2} A2 {answer_2}",
        "output_format": "[[rating]]",
    }
    pair = {"name": "pair-v2", "type": "pairwise", "system_prompt": "", "prompt_template": "{question}"}
    path = tmp_path / "judge_prompts.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(pair) + "\n")
    prompts = load_judge_prompts(path)
    # A user's file replaces Quartet's prompts (never mixed); its pairwise prompts are read too.
    assert set(prompts) == {"single-v1-multi-turn", "pair-v2"} and prompts["pair-v2"].type == "pairwise"
    msgs = judge_messages(prompts["single-v1-multi-turn"], QUESTIONS, ANSWERS, turn=2)
    assert msgs == [
        {"role": "system", "content": "Judge."},
        {
            "role": "user",
            "content": "Q1 Name three rivers in Europe. A1 The Danube, the Rhine and the Loire. "
            "Q2 Which one is the longest? A2 The Danube.",
        },
    ]
    with pytest.raises(QuartetError, match="uses \\[.answer_2., .question_2.\\], which turn 1 does not have"):
        judge_messages(prompts["single-v1-multi-turn"], QUESTIONS, ANSWERS, turn=1)


def test_bad_prompt_files(tmp_path):
    with pytest.raises(QuartetError, match="no such file"):
        load_judge_prompts(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "x"}\n')
    with pytest.raises(QuartetError, match="bad.jsonl:1: not a FastChat judge prompt"):
        load_judge_prompts(bad)
