"""The Parrot rollout with scripted models: turn order, the exact history each model sees, every
filter, batching (one call per turn and model), and resume after a kill."""

from __future__ import annotations

import json

import pytest

from inference.chat import NextTurn
from inference.generation_cache import CachedGenerator
from inference.sample_cache import SampleCache
from inference.sampling import SamplingParams
from stages.parrot_rollout.filters import RolloutFilters
from stages.parrot_rollout.rollout import Session, roll_out, swapped_roles
from tests.fake_backends import ScriptedBackend


def history_of(prompt):
    return list(prompt.messages) if isinstance(prompt, NextTurn) else list(prompt)


def answer_script(prompt):
    msgs = history_of(prompt)
    n = sum(m["role"] == "user" for m in msgs)
    return f"Answer {n} to: {msgs[-1]['content']}", "eos"


FOLLOW_UPS = [
    "Which one is the longest?",
    "How long is it in kilometres?",
    "Where does that river start?",
    "What about the second one you named?",
    "Is it used for shipping goods today?",
]


def ask_script(prompt):
    n = sum(m["role"] == "assistant" for m in history_of(prompt))
    return FOLLOW_UPS[n - 1], "eos"


def gens(answer=answer_script, ask=ask_script, cache=None):
    a, q = ScriptedBackend(answer, "answer-m"), ScriptedBackend(ask, "ask-m")
    params = SamplingParams(temperature=0.0, max_new_tokens=16)
    return a, q, CachedGenerator(a, params, cache, kind="ans"), CachedGenerator(q, params, cache, kind="ask")


def seeds(n=3):
    return [
        Session(f"s{i}", [{"role": "user", "content": f"Seed question {i} about rivers?"}]) for i in range(n)
    ]


def test_turn_order_history_and_batching():
    a, q, ga, gq = gens()
    result = roll_out(seeds(3), ga, gq, turns=3)
    s0 = result.sessions[0]
    assert [m["role"] for m in s0.messages] == ["user", "assistant"] * 3
    assert s0.messages[1]["content"] == "Answer 1 to: Seed question 0 about rivers?"
    assert s0.messages[2]["content"] == "Which one is the longest?"
    assert s0.end_reason == "turns" and s0.generated_queries == 2
    # one batched call per turn and model, every live session in it
    assert [len(c) for c in a.calls] == [3, 3, 3] and [len(c) for c in q.calls] == [3, 3]
    # the Ask model sees the whole history in true roles, ending with the assistant's reply, and opens a user turn
    second_ask = q.calls[1][0]
    assert isinstance(second_ask, NextTurn) and second_ask.role == "user"
    assert list(second_ask.messages) == s0.messages[:4]
    # the answer model sees the whole history ending with the user's query
    assert a.calls[2][0] == s0.messages[:5]


def test_swap_roles_for_chat_endpoints():
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "r"},
    ]
    assert swapped_roles(msgs, "You play the user.") == [
        {"role": "system", "content": "You play the user."},
        {"role": "assistant", "content": "q"},
        {"role": "user", "content": "r"},
    ]
    a, q, ga, gq = gens()
    roll_out(seeds(1), ga, gq, turns=2, ask_mode="swap_roles")
    assert q.calls[0][0] == [
        {"role": "assistant", "content": "Seed question 0 about rivers?"},
        {"role": "user", "content": "Answer 1 to: Seed question 0 about rivers?"},
    ]


@pytest.mark.parametrize(
    ("ask_reply", "finish", "reason"),
    [
        ("Why?", "eos", "too_short_query"),
        ("   ", "eos", "empty_query"),
        ("Seed question 0 about rivers!", "eos", "repeated_query"),
        ("Please tell me more about the", "length", "cut_off_query"),
    ],
)
def test_query_filters_end_the_session(ask_reply, finish, reason):
    a, q, ga, gq = gens(ask=lambda p: (ask_reply, finish))
    result = roll_out(seeds(1), ga, gq, turns=4)
    s = result.sessions[0]
    assert s.end_reason == reason and result.rejected == {reason: 1}
    assert [m["role"] for m in s.messages] == ["user", "assistant"]  # the turns before are kept


@pytest.mark.parametrize(
    ("reply", "finish", "reason"),
    [("", "eos", "empty_reply"), ("A long answer that stops in the", "length", "cut_off_reply")],
)
def test_reply_filters_drop_the_query_and_end_the_session(reply, finish, reason):
    def answer(prompt):
        n = sum(m["role"] == "user" for m in history_of(prompt))
        return (reply, finish) if n == 2 else answer_script(prompt)

    a, q, ga, gq = gens(answer=answer)
    result = roll_out(seeds(2), ga, gq, turns=4)
    for s in result.sessions:
        assert s.end_reason == reason
        assert [m["role"] for m in s.messages] == ["user", "assistant"]
    assert result.rejected == {reason: 2}


def test_a_looping_session_ends():
    a, q, ga, gq = gens(answer=lambda p: ("I always say the same thing.", "eos"))
    result = roll_out(seeds(1), ga, gq, turns=5)
    assert result.sessions[0].end_reason == "looping_session"
    assert result.sessions[0].user_turns() == 1


def test_a_session_filtered_before_its_first_reply_is_dropped():
    a, q, ga, gq = gens(answer=lambda p: ("", "eos"))
    result = roll_out(seeds(2), ga, gq, turns=3)
    assert result.kept() == []


def test_resume_after_a_kill_replays_the_cache(tmp_path):
    cache_file = tmp_path / "cache.jsonl"

    class Killed(Exception):
        pass

    def dying_answer(prompt):
        if sum(m["role"] == "user" for m in history_of(prompt)) == 3:
            raise Killed
        return answer_script(prompt)

    _, _, ga, gq = gens(answer=dying_answer, cache=SampleCache(str(cache_file)))
    with pytest.raises(Killed):
        roll_out(seeds(3), ga, gq, turns=4)
    a, q, ga, gq = gens(cache=SampleCache(str(cache_file)))
    resumed = roll_out(seeds(3), ga, gq, turns=4)
    a2, q2, ga2, gq2 = gens()
    fresh = roll_out(seeds(3), ga2, gq2, turns=4)
    assert [s.messages for s in resumed.sessions] == [s.messages for s in fresh.sessions]
    # turns 1-2 of the answer model and asks 1-2 came from the cache: only turns 3-4 and ask 3 are new
    assert sum(len(c) for c in a.calls) == 6 and sum(len(c) for c in q.calls) == 3
    assert json.dumps([s.messages for s in resumed.sessions]) == json.dumps(
        [s.messages for s in fresh.sessions]
    )


def test_filters_config_checked():
    with pytest.raises(ValueError, match="min_query_words"):
        RolloutFilters(min_query_words=0)
