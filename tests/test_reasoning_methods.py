"""Self-Consistency, Self-Agreement and the evaluator, end to end with a scripted fake backend."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from evaluation.reasoning.evaluator import (
    evaluate_reasoning,
    flat_metrics,
    print_results_table,
    write_results,
)
from evaluation.reasoning.methods import majority_vote, self_agreement, self_consistency
from inference.backends.base import Completion, GenerationBackend, Prompt
from inference.sample_cache import SampleCache, cache_key
from inference.sampling import SamplingParams
from reasoning.prompts import (
    PromptSettings,
    build_agreement_prompt,
    build_agreement_text,
    build_cot_prompt,
)
from reasoning.questions import ReasoningRecord

Q1 = ReasoningRecord(
    id="q1",
    question="Tom has 3 apples and buys 4 more. How many?",
    gold="7",
    answer_type="number",
    task="arith",
)
Q2 = ReasoningRecord(
    id="q2",
    question="Mia has 3 bags of 4 pens. How many pens?",
    gold="12",
    answer_type="number",
    task="arith",
)
Q3 = ReasoningRecord(
    id="q3",
    question="What is 2 + 3?",
    gold="B",
    answer_type="choice",
    task="arith_mc",
    choices=("4", "5", "6"),
)

PATHS = {
    # maj@5 is a 7/8 tie broken by first occurrence -> 7 (correct); one path does not parse.
    Q1.question: ["3 + 4 = 7. The answer is 7.", "The answer is 8.", "So 7.", "I am lost.", "8, surely"],
    # maj@5 -> 13 (wrong), while the agreement step picks 12 (correct).
    Q2.question: ["3 * 4 = 12.", "The answer is 13.", "13", "It is 13.", "The answer is 12."],
    Q3.question: ["The answer is (A).", "2 + 3 = 5, so (B).", "(B)", "(A)", "(C)"],
}
GREEDY = {
    Q1.question: "The answer is 7.",
    Q2.question: "The answer is 11.",
    Q3.question: "The answer is (B).",
}
AGREE = {
    Q1.question: "Most solutions say 7. The answer is 7.",
    Q2.question: "The answer is 12.",
    Q3.question: "I cannot tell.",
}


class FakeBackend(GenerationBackend):
    """Scripted outputs keyed by the question text found in the prompt; records every call."""

    model_id = "fake-model"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []  # (kind, n, number of prompts)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        out = []
        kinds = set()
        for p in prompts:
            text = p if isinstance(p, str) else p[-1]["content"]
            q = next(q for q in PATHS if q in text)
            if "candidate solutions" in text:
                kinds.add("agreement")
                k = len(re.findall(r"^Solution \d+:", text, re.MULTILINE))
                texts = [f"{AGREE[q]} (k={k})" if q != Q2.question else AGREE[q]]
            elif params.greedy:
                kinds.add("greedy")
                texts = [GREEDY[q]]
            else:
                kinds.add("paths")
                texts = PATHS[q][: params.n]
            out.append([Completion(t, prompt_tokens=10, completion_tokens=len(t.split())) for t in texts])
        assert len(kinds) == 1
        self.calls.append((kinds.pop(), params.n, len(prompts)))
        return out


def test_majority_vote_and_tie_break() -> None:
    assert majority_vote(["7", "8", "8", "7", None]).answer == "7"  # tie: first seen wins
    assert majority_vote(["8", "7", "7", None, None]).answer == "7"
    assert majority_vote([None, "5", None]).answer == "5"  # unparsed paths do not vote
    assert majority_vote([None, None]).answer is None
    v = majority_vote(["3", "4", "4"])
    assert v.votes == {"3": 1, "4": 2} and v.num_parsed == 3
    assert self_consistency(["1", "2", "2"], 1).answer == "1"
    assert self_consistency(["1", "2", "2"], 3).answer == "2"
    with pytest.raises(ValueError, match="exceeds"):
        self_consistency(["1"], 2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        self_consistency(["1"], 0)


def test_self_agreement_asks_the_model_once_per_question_with_the_first_k_paths() -> None:
    fake = FakeBackend()
    cache = SampleCache(None)
    settings = PromptSettings(chat=False)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=16)
    paths = [PATHS[Q1.question], PATHS[Q2.question]]
    out = self_agreement(fake, cache, [Q1, Q2], paths, 3, settings, params)
    # The model's own reply is the answer; the fake reports how many solutions the prompt showed.
    assert [g[0].text for g in out] == [f"{AGREE[Q1.question]} (k=3)", AGREE[Q2.question]]
    assert fake.calls == [("agreement", 1, 2)]
    key = cache_key(
        "agreement", "q1", "fake-model", params, build_agreement_prompt(Q1, paths[0][:3], settings)
    )
    assert cache.get(key, 1)[0].text == out[0][0].text  # cached under kind "agreement"
    again = self_agreement(fake, cache, [Q1, Q2], paths, 3, settings, params)
    assert [g[0].text for g in again] == [g[0].text for g in out] and len(fake.calls) == 1
    with pytest.raises(ValueError, match="exceeds the available paths"):
        self_agreement(fake, cache, [Q1], [["only one"]], 2, settings, params)


def test_agreement_prompt_exact_string() -> None:
    settings = PromptSettings(
        agreement_template="Q: {question}\n{paths}\nOf these {m}, which answer is most common?{format_instruction}",
        agreement_path_template="[{i}] {path}",
    )
    text = build_agreement_text(Q3, ["  (A) first  ", "then (B)"], settings)
    assert text == (
        "Q: What is 2 + 3?\n(A) 4\n(B) 5\n(C) 6\n"
        "[1] (A) first\n\n[2] then (B)\n"
        'Of these 2, which answer is most common? Reply with "The answer is (X)." where X is one of A, B, C.'
    )
    unknown = PromptSettings(answer_format_known=False, chat=False)
    default = build_agreement_prompt(Q1, ["p1", "p2"], unknown)
    assert default == (
        "Tom has 3 apples and buys 4 more. How many?\n\n"
        "Here are 2 candidate solutions to this question:\n\n"
        "Solution 1: p1\n\nSolution 2: p2\n\n"
        "Which final answer do most of the candidate solutions agree on?\nAnswer:"
    )
    with pytest.raises(ValueError, match="at least one sampled path"):
        build_agreement_text(Q1, [], settings)
    with pytest.raises(ValueError, match="placeholder"):
        PromptSettings(agreement_template="no placeholders")


def test_cot_prompt_scenarios() -> None:
    pool = [
        ReasoningRecord(
            id="e1",
            question="Is 4 even?",
            gold="yes",
            answer_type="yesno",
            task="yesno",
            rationale="4 = 2 * 2.",
        ),
        ReasoningRecord(
            id="e2",
            question="Ann has 1 pen and gets 1 more. How many?",
            gold="2",
            answer_type="number",
            task="arith",
            rationale="1 + 1 = 2.",
        ),
    ]
    known = PromptSettings(
        chat=False, num_fewshot=1, task_descriptions={"arith": "Solve the math word problem."}
    )
    assert build_cot_prompt(Q1, known, pool) == (
        "Solve the math word problem.\n"
        'Think step by step, then finish with "The answer is N." where N is a number.\n\n'
        "Question: Ann has 1 pen and gets 1 more. How many?\nAnswer: 1 + 1 = 2. The answer is 2.\n\n"
        "Question: Tom has 3 apples and buys 4 more. How many?\nAnswer:"
    )
    unknown = PromptSettings(
        question_type_known=False, answer_format_known=False, num_fewshot=2, task_descriptions={"arith": "X"}
    )
    msgs = build_cot_prompt(Q1, unknown, pool)
    assert msgs[0]["role"] == "user" and len(msgs) == 1
    body = msgs[0]["content"]
    assert body.startswith("Answer the following question. Think step by step.\n\n")
    assert "Is 4 even?" in body and "Ann has 1 pen" in body and "X" not in body.split("\n")[0]
    with pytest.raises(ValueError, match="exemplars are available"):
        build_cot_prompt(Q3, PromptSettings(num_fewshot=1), pool)


def _evaluate(backend: GenerationBackend, cache: Path | None, ks=(1, 3, 5)) -> dict:
    return evaluate_reasoning(
        backend,
        [Q1, Q2, Q3],
        methods=["greedy", "sc", "sa"],
        ks=list(ks),
        num_paths=5,
        extraction_mode="auto",
        prompt_settings=PromptSettings(chat=True),
        sampling=SamplingParams(temperature=0.7, max_new_tokens=64, seed=0),
        cache_path=cache,
        chunk_size=2,
        progress=False,
    )


def test_end_to_end_sc_sa_and_cache_reuse(tmp_path: Path) -> None:
    cache = tmp_path / "cache.jsonl"
    fake = FakeBackend()
    res = _evaluate(fake, cache)
    m = res["metrics"]
    rows = {r["id"]: r for r in res["samples"]}

    # SC picks the majority, ties by first occurrence; SA reports what the agreement call picked.
    assert rows["q1"]["sc"]["5"]["pred"] == "7" and rows["q1"]["sc"]["5"]["votes"] == {"7": 2, "8": 2}
    assert rows["q2"]["sc"]["5"]["pred"] == "13"
    assert rows["q2"]["sa"]["5"]["pred"] == "12" and rows["q2"]["sa"]["5"]["correct"]
    assert rows["q3"]["sc"]["5"]["pred"] == "A"  # A, B, B, A, C -> tie A/B, A first
    assert rows["q3"]["sa"]["5"]["pred"] is None  # "I cannot tell." does not parse
    assert rows["q1"]["sa"]["3"]["text"].endswith("(k=3)")  # agree@3 saw exactly 3 paths
    assert m["greedy"]["accuracy"] == pytest.approx(2 / 3)
    assert m["sc@1"]["accuracy"] == pytest.approx(2 / 3)  # q1: 7, q2: 12, q3: A
    assert m["sc@3"]["accuracy"] == pytest.approx(2 / 3)  # q1: 7, q2: 13, q3: B
    assert m["sc@5"]["accuracy"] == pytest.approx(1 / 3)
    assert m["sa@5"]["accuracy"] == pytest.approx(2 / 3)
    assert m["sa@5"]["parse_failure_rate"] == pytest.approx(1 / 3)
    assert m["sc@5"]["path_parse_failure_rate"] == pytest.approx(1 / 15)  # "I am lost."
    assert m["sc@5"]["calls_per_question"] == 5 and m["sa@5"]["calls_per_question"] == 6

    # Tokens: SC pays one shared prompt + the first k paths; SA adds its agreement call.
    q1_sc5 = 10 + sum(len(t.split()) for t in PATHS[Q1.question])
    assert rows["q1"]["sa"]["5"]["total_tokens"] == q1_sc5 + 10 + len(rows["q1"]["sa"]["5"]["text"].split())
    exp_sc5 = sum(10 + sum(len(t.split()) for t in PATHS[q.question]) for q in (Q1, Q2, Q3)) / 3
    assert m["sc@5"]["tokens_per_question"]["total"] == pytest.approx(exp_sc5)
    assert res["per_task"]["arith_mc"]["sc@3"]["accuracy"] == 1.0
    assert res["settings"]["pool"] == "mixed-task" and res["settings"]["chat_template"] is True

    # One sampling call set (m=5) served every k; greedy and agreement calls were batched by chunk.
    path_calls = [c for c in fake.calls if c[0] == "paths"]
    assert path_calls == [("paths", 5, 2), ("paths", 5, 1)]
    assert res["cache"]["generated_prompts"] == {"greedy": 3, "paths": 3, "agreement": 9}
    assert len(cache.read_text().splitlines()) == 3 + 3 + 9

    # Second run: everything from the cache, zero backend calls, identical results.
    fake2 = FakeBackend()
    res2 = _evaluate(fake2, cache)
    assert fake2.calls == []
    assert res2["metrics"] == m and res2["samples"] == res["samples"]
    assert len(cache.read_text().splitlines()) == 15  # nothing appended

    # A new k reuses the cached paths: only agreement calls are made.
    fake3 = FakeBackend()
    _evaluate(fake3, cache, ks=(2, 5))
    assert {c[0] for c in fake3.calls} == {"agreement"}

    out_json, out_rows = write_results(res, tmp_path / "run")
    saved = json.loads(out_json.read_text())
    assert saved["metrics"]["sa@5"]["accuracy"] == pytest.approx(2 / 3) and "samples" not in saved
    assert len(out_rows.read_text().splitlines()) == 3
    assert flat_metrics(res)["reasoning/sc@5/accuracy"] == pytest.approx(1 / 3)
    from rich.console import Console

    buf = io.StringIO()
    print_results_table(res, Console(file=buf, width=200))
    table = buf.getvalue()
    assert "sa@5" in table and "66.7%" in table and "arith_mc" in table


def test_evaluator_rejects_bad_settings() -> None:
    fake = FakeBackend()
    with pytest.raises(ValueError, match="num_paths \\(m\\) must be an integer >= 1"):
        evaluate_reasoning(fake, [Q1], num_paths=0, ks=[1], progress=False)
    with pytest.raises(ValueError, match="1 <= k <= m=3"):
        evaluate_reasoning(fake, [Q1], num_paths=3, ks=[4], progress=False)
    with pytest.raises(ValueError, match="unknown methods"):
        evaluate_reasoning(fake, [Q1], methods=["beam"], progress=False)
    with pytest.raises(ValueError, match="extraction_mode"):
        evaluate_reasoning(fake, [Q1], extraction_mode="fuzzy", progress=False)
    assert fake.calls == []


def test_sample_cache_reuse_superset_and_crash_recovery(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    params = SamplingParams(n=4, temperature=0.7)
    key = cache_key("paths", "q1", "m", params, "prompt")
    assert key == cache_key("paths", "q1", "m", params.replace(n=2), "prompt")  # n is not in the key
    assert key != cache_key("paths", "q1", "m", params.replace(temperature=0.8), "prompt")
    assert key != cache_key("paths", "q1", "m", params, "prompt 2")
    cache = SampleCache(path)
    comps = [Completion(f"t{i}", 3, 1) for i in range(4)]
    cache.put_many(
        [
            {
                "key": key,
                "kind": "paths",
                "qid": "q1",
                "model": "m",
                "params": {},
                "prompt": "prompt",
                "completions": comps,
            }
        ]
    )
    again = SampleCache(path)
    assert [c.text for c in again.get(key, 2)] == ["t0", "t1"]  # a larger entry serves a smaller n
    assert again.get(key, 5) is None
    # A half-written last line (crash mid-write) is skipped, and later appends start on a new line.
    with path.open("a") as f:
        f.write('{"key": "abc", "comp')
    recovered = SampleCache(path)
    assert len(recovered) == 1
    recovered.put_many(
        [
            {
                "key": "k2",
                "kind": "paths",
                "qid": "q2",
                "model": "m",
                "params": {},
                "prompt": "p",
                "completions": comps[:1],
            }
        ]
    )
    assert len(SampleCache(path)) == 2
    # Corruption in the middle is an error naming the line.
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{broken", lines[-1]]) + "\n")
    with pytest.raises(ValueError, match=r"c\.jsonl:2: corrupt cache line"):
        SampleCache(path)
