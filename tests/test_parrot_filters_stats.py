"""Parrot rollout filters (each reason) and dialogue statistics, checked on values computed by hand."""

from __future__ import annotations

import pytest

from stages.parrot_rollout.filters import RolloutFilters, normalise, query_problem, reply_problem
from stages.parrot_rollout.stats import distinct_n, rollout_statistics, self_rouge_l

F = RolloutFilters(min_query_words=3, near_duplicate_ratio=90, loop_ratio=95)


def test_normalise():
    assert normalise("  What about   Paris?! ") == "what about paris"


@pytest.mark.parametrize(
    ("query", "earlier", "reason"),
    [
        ("   ", [], "empty_query"),
        ("Why?", [], "too_short_query"),
        ("And then?", [], "too_short_query"),
        ("What is the capital of France?", ["what is the capital of france"], "repeated_query"),
        ("What is the capitol of France?", ["What is the capital of France?"], "repeated_query"),
        ("What is the capital of Spain?", ["What is the capital of France?"], None),
        ("Tell me more about the second one.", ["Name three rivers in Europe."], None),
    ],
)
def test_query_problems(query, earlier, reason):
    assert query_problem(query, earlier, F) == reason


@pytest.mark.parametrize(
    ("reply", "finish", "earlier", "reason"),
    [
        ("", "eos", [], "empty_reply"),
        ("Paris is the capital", "length", [], "cut_off_reply"),
        ("Paris is the capital of France.", "eos", ["Paris is the capital of France!"], "looping_session"),
        ("Madrid is the capital of Spain.", "eos", ["Paris is the capital of France."], None),
    ],
)
def test_reply_problems(reply, finish, earlier, reason):
    assert reply_problem(reply, finish, earlier, F) == reason


def test_cut_off_replies_can_be_kept():
    keep = RolloutFilters(reject_cut_off_replies=False)
    assert reply_problem("Paris is the capital", "length", [], keep) is None


def test_bad_thresholds_are_config_errors():
    with pytest.raises(ValueError, match="stage.filters.near_duplicate_ratio"):
        RolloutFilters(near_duplicate_ratio=0)
    with pytest.raises(ValueError, match="min_query_words"):
        RolloutFilters(min_query_words=0)


def test_distinct_n_by_hand():
    texts = ["a b a b", "a b c"]
    # unigrams: a b a b a b c -> 3 distinct of 7; bigrams: ab ba ab ab bc -> 3 distinct of 5
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert distinct_n([], 2) == 0.0


def test_self_rouge_l_by_hand():
    assert self_rouge_l(["only one"]) is None
    assert self_rouge_l(["the cat sat", "the cat sat"]) == pytest.approx(1.0)
    assert self_rouge_l(["red green", "blue yellow"]) == pytest.approx(0.0)
    # "a b c d" vs "a b x y": LCS 2 of 4 and 4 -> F1 0.5 both ways
    assert self_rouge_l(["a b c d", "a b x y"]) == pytest.approx(0.5)


def test_rollout_statistics():
    def session(*queries):
        out = []
        for q in queries:
            out += [{"role": "user", "content": q}, {"role": "assistant", "content": "ok."}]
        return out

    sessions = [
        session("Name three rivers in Europe.", "Which one is the longest?", "And in Asia?"),
        session("Explain photosynthesis briefly."),
    ]
    stats = rollout_statistics(sessions)
    assert stats["sessions"] == 2
    assert stats["turns_per_session"] == {"mean": 2.0, "histogram": {"1": 1, "3": 1}}
    # "Which one ..." (reference) and "And in Asia?" (ellipsis) depend on context; first queries never do
    assert stats["context_dependent_per_session"] == pytest.approx(1.0)
    assert stats["context_dependent_share"] == pytest.approx(2 / 4)
    assert 0 < stats["diversity"]["distinct_1"] <= 1
