"""The RLMEC generate.py stages: restart after a failure mid-way (no duplicates, output equal to an
uninterrupted run's), and bad input (missing fields, unparseable gold, editor replies without a step
index, GRM/policy tokenizer mismatch, per-token length mismatch)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from datamodules.rlmec_token_data import validate_record
from inference.generation_cache import CachedGenerator
from inference.sample_cache import SampleCache
from inference.sampling import SamplingParams
from reasoning.prompts import PromptSettings
from stages.common import write_jsonl_atomic
from stages.rlmec.arith_rules import arith_rules
from stages.rlmec.baseline_data import baseline_rows
from stages.rlmec.edit import edit_samples
from stages.rlmec.grm_data import grm_examples
from stages.rlmec.rl_data import build_rl_records, tokenizer_mismatch
from stages.rlmec.sample import load_problems, sample_problems
from stages.rlmec.sample_records import SAMPLE_FIELDS, BadRecords, iter_checked
from stages.rlmec.token_scoring import TeacherForcedScorer, cached_scorer
from tests.fake_backends import ScriptedBackend, last_content
from tests.inference_helpers import tiny_llama
from utils.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "data" / "reasoning" / "train.jsonl"


class Crash(RuntimeError):
    pass


class FailingAfter(ScriptedBackend):
    """A scripted backend that raises on its call number ``fail_at`` (0-based): a crash mid-way."""

    def __init__(self, reply, fail_at: int, model_id: str = "scripted") -> None:
        super().__init__(reply, model_id)
        self.fail_at = fail_at

    def generate(self, prompts, params):
        if len(self.calls) == self.fail_at:
            raise Crash("killed mid-way")
        return super().generate(prompts, params)


def _gold_for(prompt) -> str:
    """A scripted policy: '<a> + <b> = <sum>' of the question's first two numbers (right on some
    problems, wrong on others)."""
    nums = [int(n) for n in re.findall(r"\d+", last_content(prompt))[:2]]
    a, b = (nums + [0, 0])[:2]
    return f"We add {a} + {b} = {a + b}. The answer is {a + b}."


def _keys(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines()]


def _sample(tmp: Path, backend, cache: Path, problems) -> Path:
    gen = CachedGenerator(
        backend, SamplingParams(n=3, temperature=0.7, top_p=0.95), SampleCache(cache), "s", 2
    )
    rows = sample_problems(problems, gen, PromptSettings(), chunk_size=2)
    out = tmp / "samples.jsonl"
    write_jsonl_atomic(out, rows)
    return out


@pytest.fixture(scope="module")
def problems():
    return load_problems(str(TRAIN), BadRecords(), limit=7)


def test_rlmec_sample_resumes_after_a_crash_with_the_same_output(tmp_path, problems):
    whole = _sample(tmp_path / "a", ScriptedBackend(_gold_for), tmp_path / "a.jsonl", problems)
    crashed = tmp_path / "b.jsonl"
    with pytest.raises(Crash):
        _sample(tmp_path / "b", FailingAfter(_gold_for, fail_at=2), crashed, problems)
    assert len(_keys(crashed)) == 4  # two chunks of two problems were cached before the crash
    again = ScriptedBackend(_gold_for)
    resumed = _sample(tmp_path / "b", again, crashed, problems)
    assert again.prompts_seen == 3  # only the 3 missing problems were generated
    assert resumed.read_bytes() == whole.read_bytes()
    keys = _keys(crashed)
    assert len(keys) == len(set(keys)) == 7
    rows = [json.loads(line) for line in whole.read_text().splitlines()]
    assert len(rows) == 21 and len({r["id"] for r in rows}) == 21
    # labels by answer match: the first problem (4 + 4*10 = 44) is wrong, the second (10 - 3) too
    assert [r["correct"] for r in rows[:3]] == [False] * 3 and rows[0]["pred"] == "8"


def _teacher_reply(prompt) -> str:
    """A model-like editor: names step 1 as wrong, and rewrites with the reference solution."""
    text = last_content(prompt)
    if "Find the first wrong step" in text:
        return "The first error step is [1]"
    return text.split("Reference solution:\n", 1)[1].split("\n\n", 1)[0]


def _samples(tmp_path, problems) -> list:
    path = _sample(tmp_path, ScriptedBackend(_gold_for), tmp_path / "c.jsonl", problems)
    return [(d, p) for _, d, p in iter_checked(str(path), SAMPLE_FIELDS, BadRecords("error"))]


def test_rlmec_edit_with_a_model_editor_resumes_after_a_crash(tmp_path, problems):
    samples = _samples(tmp_path, problems)
    wrong = sum(not d["correct"] for d, _ in samples)

    def run(backend, cache):
        gen = CachedGenerator(backend, SamplingParams(temperature=0.0), SampleCache(cache), "e", 2)
        return edit_samples(samples, lambda reqs: gen([r.messages for r in reqs]), chunk_size=6)

    whole = run(ScriptedBackend(_teacher_reply), tmp_path / "e1.jsonl")
    with pytest.raises(Crash):
        run(FailingAfter(_teacher_reply, fail_at=4), tmp_path / "e2.jsonl")
    again = ScriptedBackend(_teacher_reply)
    resumed = run(again, tmp_path / "e2.jsonl")
    assert resumed == whole
    assert again.prompts_seen < 2 * wrong  # what was cached before the crash was not asked again
    keys = _keys(tmp_path / "e2.jsonl")
    assert len(keys) == len(set(keys))
    # a wrong sample is located at step 1 and rewritten to the gold solution, whose answer is right
    first = next(r for r in whole if not r["correct"])
    assert first["edit_status"] == "rewritten" and first["first_error_step"] == 1
    assert first["rewrite"].endswith("#### 44")


def test_an_editor_reply_without_a_step_index_is_counted_not_fatal(tmp_path, problems):
    samples = _samples(tmp_path, problems)
    counts: Counter = Counter()
    rows = edit_samples(samples, lambda reqs: ["Looks mostly fine to me."] * len(reqs), counts=counts)
    wrong = [r for r in rows if not r["correct"]]
    assert wrong and all(r["edit_status"] == "dropped" for r in wrong)
    assert {r["drop_reason"] for r in wrong} == {"no_step_index"}
    assert counts["dropped_no_step_index"] == len(wrong)
    assert all(r["rewrite"] == r["response"] for r in rows if r["correct"])


def test_grm_and_baseline_data_from_edits(tmp_path, problems):
    samples = _samples(tmp_path, problems)
    rows = edit_samples(samples, arith_rules)
    problem_of = {d["id"]: p for d, p in samples}
    examples = grm_examples([(r, problem_of[r["id"]]) for r in rows], identity_rate=1.0)
    kinds = Counter(e["kind"] for e in examples)
    n_rewritten = sum(r["edit_status"] == "rewritten" for r in rows)
    assert kinds["locate"] == kinds["rewrite"] == kinds["rewrite_full"] == n_rewritten > 0
    loc = next(e for e in examples if e["kind"] == "locate")
    assert re.fullmatch(r"The first error step is \[\d+\]", loc["messages"][-1]["content"])
    assert "Reference solution:" in loc["messages"][0]["content"]  # conditioned on the gold solution
    none = grm_examples([(r, problem_of[r["id"]]) for r in rows], identity_rate=0.0)
    assert not any(e["kind"] == "identity" for e in none)
    # RFT keeps each distinct correct solution of a problem once; DPO pairs stay within a problem
    triples = [("x", d, p) for d, p in samples]
    rft, dpo, counts = baseline_rows(triples)
    assert counts["duplicate_correct_dropped"] == sum(d["correct"] for d, _ in samples) - len(rft)
    for pair in dpo:
        assert pair["chosen"] != pair["rejected"]


def test_missing_fields_name_file_and_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    good = {
        "id": "a#0",
        "problem_id": "a",
        "problem": {"question": "Is 2 even?", "answer": "#### yes"},
        "prompt": [{"role": "user", "content": "Is 2 even?"}],
        "response": "Yes.",
        "correct": True,
    }
    path.write_text(
        json.dumps(good) + "\n" + json.dumps({k: v for k, v in good.items() if k != "response"}) + "\n"
    )
    bad = BadRecords("skip")
    assert len(list(iter_checked(str(path), SAMPLE_FIELDS, bad))) == 1
    assert bad.summary() == {"missing_fields": 1}
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: missing field\(s\) 'response'"):
        list(iter_checked(str(path), SAMPLE_FIELDS, BadRecords("error")))


def test_a_gold_answer_that_cannot_be_parsed_is_counted_or_an_error(tmp_path):
    path = tmp_path / "problems.jsonl"
    rows = [
        {"question": "How many?", "answer": "Two and two.\n#### four", "answer_type": "number"},
        {"question": "How many?", "answer": "2 + 2 = 4.\n#### 4"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = BadRecords("skip")
    assert [p.gold for _, p in load_problems(str(path), bad)] == ["4"]
    assert bad.summary() == {"bad_problem": 1}
    with pytest.raises(DataError, match=r"problems.jsonl:1: .*'four' is not a valid 'number' answer"):
        load_problems(str(path), BadRecords("error"))


def test_grm_with_another_tokenizer_is_refused(tokenizer):
    import copy

    other = copy.deepcopy(tokenizer)
    assert tokenizer_mismatch(tokenizer, other) is None
    other.add_tokens(["<|extra|>"])
    assert tokenizer_mismatch(tokenizer, other) == "their vocabularies differ"


def _tiny_model(tokenizer, seed: int):
    return tiny_llama(len(tokenizer), seed, hidden=32)


class FailingScorer(TeacherForcedScorer):
    def __init__(self, *a, fail_at: int, **k):
        super().__init__(*a, **k)
        self.calls, self.fail_at, self.jobs = 0, fail_at, 0

    def generate(self, prompts, params):
        if self.calls == self.fail_at:
            raise Crash("killed mid-way")
        self.calls += 1
        self.jobs += len(prompts)
        return super().generate(prompts, params)


def test_rlmec_rl_data_resumes_after_a_crash_and_rejects_length_mismatch(tmp_path, tokenizer, problems):
    samples = edit_samples(_samples(tmp_path, problems[:3]), arith_rules)
    problem_of = {p.id: p for _, p in problems}
    triples = [(f"e:{i}", r, problem_of[r["problem_id"]]) for i, r in enumerate(samples)]
    policy, grm = _tiny_model(tokenizer, 0), _tiny_model(tokenizer, 1)
    pad = tokenizer.pad_token_id

    def run(cache: Path, fail_at: int = -1):
        ref = FailingScorer(policy, pad, 4, "policy", fail_at=fail_at)
        rm = FailingScorer(grm, pad, 4, "grm", fail_at=-1)
        sc = SampleCache(cache)
        rows = build_rl_records(
            triples,
            tokenizer,
            cached_scorer(ref, sc, "ref", 2),
            cached_scorer(rm, sc, "grm", 2),
            chunk_size=4,
        )
        return rows, ref, rm

    whole, _, _ = run(tmp_path / "s1.jsonl")
    with pytest.raises(Crash):
        run(tmp_path / "s2.jsonl", fail_at=3)  # in the second chunk's reference pass
    resumed, ref, rm = run(tmp_path / "s2.jsonl")
    assert resumed == whole
    assert ref.jobs == len(whole) - 6 and rm.jobs == len(whole) - 4  # only what was not cached
    keys = _keys(tmp_path / "s2.jsonl")
    assert len(keys) == len(set(keys)) == 2 * len(whole)
    assert len({r["id"] for r in whole}) == len(whole)
    out = tmp_path / "rl.jsonl"
    write_jsonl_atomic(out, whole)
    rec = json.loads(out.read_text().splitlines()[0])
    validate_record(rec, "rl.jsonl:1", len(tokenizer))
    rec["rewards"] = rec["rewards"] + [0.0]
    with pytest.raises(DataError, match=r"rl.jsonl:1: field 'rewards' has \d+ values but 'response_ids' has"):
        validate_record(rec, "rl.jsonl:1", len(tokenizer))
