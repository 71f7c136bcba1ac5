"""The shared judges (evaluation/judges.py): rating and yes/no parsing on real-looking judge outputs,
the judges on a scripted backend with the sample cache, and failures counted, never scored."""

from __future__ import annotations

import json

import pytest

from evaluation.judges import (
    RatingJudge,
    Verdict,
    YesNoJudge,
    build_judge,
    mean_score,
    parse_rating,
    parse_yes_no,
)
from inference.sample_cache import SampleCache
from inference.sampling import SamplingParams
from tests.fake_backends import ScriptedBackend, last_content
from utils.errors import ConfigError


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("[[7]]", 7.0),
        ("[[7.5]]", 7.5),
        ("Rating: [[10]]", 10.0),
        ("Rating: [[1]]", 1.0),
        (
            "The assistant's answer is accurate and addresses every part of the question, but it is a bit "
            "terse and gives no example.\n\nRating: [[8]]",
            8.0,
        ),
        ("Explanation: the code has an off-by-one error in the loop bound.\nRating: [[ 3 ]]", 3.0),
        ("Rating: [[6/10]]", 6.0),
        ("I rate it [[9]]. To repeat, the final rating is [[9]].", 9.0),  # the same rating twice
        ("**Rating: [[4]]**", 4.0),
        ("Rating: [[7.0]]", 7.0),
    ],
)
def test_parse_rating_reads_fastchat_single_answer_verdicts(reply, score):
    assert parse_rating(reply) == score


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "The answer is good. Rating: 8",  # no double brackets
        "Rating: [8]",  # single brackets: not the [[rating]] format
        "Rating: [[rating]]",  # the template's placeholder echoed back
        "First I thought [[6]], but on reflection [[7]].",  # two different ratings
        "Rating: [[11]]",  # out of 1-10
        "Rating: [[0]]",
        "Rating: [[-3]]",
        "Rating: [[ten]]",
        "I cannot judge this answer.",
    ],
)
def test_parse_rating_refuses_missing_ambiguous_and_out_of_range(reply):
    assert parse_rating(reply) is None


def test_parse_rating_custom_scale():
    assert parse_rating("[[0]]", low=0, high=1) == 0.0
    assert parse_rating("[[2]]", low=0, high=1) is None


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Yes", True),
        ("No", False),
        ("yes.", True),
        ("No.", False),
        ("Yes, it refers to the pear mentioned earlier.", True),
        ("No, the question can be understood on its own.", False),
        ("**Yes**", True),
        ("Answer: no", False),
        ("Verdict: Yes", True),
        ("The answer is no.", False),
        ("The question uses 'it' for the fruit named before, so yes.", True),
        ("[[yes]]", True),
        ("Reasoning: 'that' has no referent without the history. [[YES]]", True),
        ("Decision - no", False),
    ],
)
def test_parse_yes_no_reads_verdicts(reply, verdict):
    assert parse_yes_no(reply) is verdict


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "I am not sure.",
        "It depends on how you read it.",
        "[[yes]] ... actually [[no]]",  # two different bracketed verdicts
        "It could be yes or no.",  # both words, no leading verdict
        "Nobody knows",  # 'no' only inside a word
    ],
)
def test_parse_yes_no_refuses_unclear_replies(reply):
    assert parse_yes_no(reply) is None


def _rating_reply(prompt) -> str:
    text = last_content(prompt)
    return {"a": "Good answer. Rating: [[9]]", "b": "Rating: [[4.5]]", "c": "I refuse to rate."}[text]


def test_rating_judge_on_a_scripted_backend_counts_failures_and_caches(tmp_path):
    backend = ScriptedBackend(_rating_reply, model_id="judge-model")
    params = SamplingParams(temperature=0.0, max_new_tokens=64)
    cache = SampleCache(tmp_path / "judge.jsonl")
    judge = RatingJudge.from_backend(backend, params, cache)
    prompts = [[{"role": "user", "content": c}] for c in ("a", "b", "c")]
    verdicts = judge(prompts)
    assert [v.value for v in verdicts] == [9.0, 4.5, None]
    assert verdicts[2] == Verdict(None, "I refuse to rate.") and not verdicts[2].ok
    assert verdicts[2].score_or() == -1.0 and verdicts[0].score_or() == 9.0
    assert dict(judge.counts) == {"judged": 3, "unparseable": 1}
    # the failure is not a score: the mean is over the two parsed verdicts
    assert mean_score(verdicts) == ((9.0 + 4.5) / 2, 1)
    assert backend.calls == [prompts]
    lines = [json.loads(line) for line in (tmp_path / "judge.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in lines] == ["judge/rating"] * 3 and {e["model"] for e in lines} == {
        "judge-model"
    }

    # a second judge over the same cache file pays nothing and gives the same verdicts
    backend2 = ScriptedBackend(lambda p: "Rating: [[1]]", model_id="judge-model")
    again = RatingJudge.from_backend(backend2, params, SampleCache(tmp_path / "judge.jsonl"))
    assert [v.value for v in again(prompts)] == [9.0, 4.5, None]
    assert backend2.calls == [] and again.counts["unparseable"] == 1


def test_yes_no_judge_on_a_scripted_backend():
    replies = {"q1": "Yes, it needs the history.", "q2": "No.", "q3": "Hard to say."}
    backend = ScriptedBackend(lambda p: replies[last_content(p)])
    judge = YesNoJudge.from_backend(backend, SamplingParams(max_new_tokens=8))
    verdicts = judge([[{"role": "user", "content": q}] for q in ("q1", "q2", "q3")])
    assert [v.value for v in verdicts] == [True, False, None]
    assert judge.counts["unparseable"] == 1 and judge.describe()["judge"] == "yes_no"
    assert mean_score([]) == (None, 0)


def test_judge_rejects_a_generator_that_drops_replies():
    judge = YesNoJudge(lambda prompts: ["yes"])
    with pytest.raises(RuntimeError, match="returned 1 replies for 2 prompts"):
        judge(["a", "b"])


def test_build_judge_from_config_names_the_missing_key():
    with pytest.raises(ConfigError, match=r"stage.judge.path is required"):
        build_judge("yes_no", {"backend": "hf"}, "stage.judge")
    with pytest.raises(ConfigError, match=r"stage.judge.sampling: .*temperature"):
        build_judge("rating", {"backend": "hf", "path": "x", "sampling": {"temperature": -1}}, "stage.judge")
    with pytest.raises(ValueError, match="unknown judge kind 'stars'"):
        build_judge("stars", {"backend": "hf", "path": "x"})


# ---- the capo_negatives stage's judge path --------------------------------------------------------
def test_capo_negatives_judge_path_keeps_confirmed_turns_and_counts_failures():
    from collections import Counter

    from stages.capo_negatives.runner import build_stage_judge, find_turns, judge_turns

    dialogue = [
        {"role": "user", "content": "Name three fruits."},
        {"role": "assistant", "content": "Pear, plum and grape."},
        {"role": "user", "content": "What color is the first one?"},
        {"role": "assistant", "content": "Green."},
        {"role": "user", "content": "How does it taste?"},
        {"role": "assistant", "content": "Mild."},
        {"role": "user", "content": "And the other one?"},
        {"role": "assistant", "content": "Sweet."},
    ]
    turns = find_turns([("d1", "f:1", dialogue)])
    assert [t.query for t in turns] == [
        "What color is the first one?",
        "How does it taste?",
        "And the other one?",
    ]
    replies = {
        "What color is the first one?": "Yes. 'The first one' points back to the fruit list.",
        "How does it taste?": "No.",
        "And the other one?": "Maybe.",
    }
    seen: list = []

    def reply(prompt) -> str:
        seen.append(prompt)
        text = last_content(prompt)
        return next(v for q, v in replies.items() if f"The user's next message is:\n\n{q}" in text)

    for on_unclear, expected in (
        ("drop", ["What color is the first one?"]),
        ("keep", ["What color is the first one?", "And the other one?"]),
    ):
        judge = YesNoJudge.from_backend(ScriptedBackend(reply), SamplingParams(max_new_tokens=8))
        stats: Counter = Counter()
        kept = judge_turns(turns, judge, on_unclear=on_unclear, stats=stats)
        assert [t.query for t in kept] == expected
        assert stats["judge_unparseable"] == 1 and stats["judge_confirmed"] == len(expected)
        assert stats["judge_rejected"] == 3 - len(expected) and judge.counts["unparseable"] == 1
    # the judge saw the history before each question, as User:/Assistant: lines
    assert "User: Name three fruits.\nAssistant: Pear, plum and grape." in last_content(seen[0])

    with pytest.raises(ConfigError, match=r"on_unclear='maybe' must be 'drop' or 'keep'"):
        build_stage_judge({"backend": "hf", "path": "x", "on_unclear": "maybe"}, SampleCache(None), 8)
    with pytest.raises(ConfigError, match=r"stage.judge.prompt must contain \{history\} and \{question\}"):
        build_stage_judge({"backend": "hf", "path": "x", "prompt": "Is {question} ok?"}, SampleCache(None), 8)


def test_rating_judge_over_the_openai_http_backend():
    """The same judge, built from config, on an OpenAI-compatible server (a scripted one on 127.0.0.1)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            question = body["messages"][-1]["content"]
            text = "Solid answer. Rating: [[8]]" if "good" in question else "No rating from me."
            data = json.dumps(
                {
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 4},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        cfg = {
            "backend": "openai_http",
            "base_url": f"http://127.0.0.1:{httpd.server_address[1]}/v1",
            "model": "judge-7b",
            "concurrency": 1,
            "sampling": {"temperature": 0.0, "max_new_tokens": 16},
        }
        judge = build_judge("rating", cfg, "judge")
        verdicts = judge(
            [
                [{"role": "user", "content": "grade a good answer"}],
                [{"role": "user", "content": "grade this"}],
            ]
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [v.value for v in verdicts] == [8.0, None]
    assert judge.counts["unparseable"] == 1 and judge.describe()["model_id"] == "judge-7b"
    assert [b["model"] for b in bodies] == ["judge-7b", "judge-7b"] and bodies[0]["max_tokens"] == 16
