"""eval.py task=mt_bench end to end on a tiny HF model folder with the stand-in judge: answers in
FastChat's format equal to what the model generates for the same histories, judgments and results that
agree with each other, the per-turn plot, judging answers made elsewhere, the MT-Bench++-style extension
(written once, reused), and a rerun that generates nothing."""

from __future__ import annotations

import json

import pytest

from tests.helpers import compose_cfg

SMALL = ["task=mt_bench", "judge=standin", "task.max_new_tokens=8", "task.limit=4", "print_config=false"]


def run_eval(tmp_path, tiny_hf_dir, extra=()):
    from eval import evaluate

    cfg = compose_cfg(
        [*SMALL, "model=hf", f"model.pretrained={tiny_hf_dir}", *extra], tmp_path, config_name="eval"
    )
    return cfg, evaluate(cfg)


def test_mt_bench_answers_judgments_results_and_plot(tmp_path, tiny_hf_dir):
    from evaluation.mt_bench.answering import history
    from evaluation.mt_bench.fastchat_format import read_answers, read_questions
    from evaluation.mt_bench.standin_judge import overlap_score
    from evaluation.mt_bench.temperatures import temperature_for
    from inference.backends.hf import HFBackend
    from inference.sampling import SamplingParams

    cfg, metrics = run_eval(tmp_path, tiny_hf_dir)
    model_id = tiny_hf_dir.name
    answers = read_answers(tmp_path / "model_answer" / f"{model_id}.jsonl")
    questions = read_questions(cfg.data.path)[:4]
    assert list(answers) == [q.question_id for q in questions]
    # Turn by turn, with the model's own earlier answers: regenerate question 1 by hand.
    backend = HFBackend.from_pretrained(str(tiny_hf_dir), dtype="float32")
    q = questions[0]
    params = SamplingParams(temperature=temperature_for(q.category), max_new_tokens=8, seed=cfg.seed)
    for turn in range(len(q.turns)):
        expected = backend.generate([history(q, answers[q.question_id], turn)], params)[0][0].text.strip()
        assert answers[q.question_id][turn] == expected
    judgments = [json.loads(x) for x in (tmp_path / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == sum(len(q.turns) for q in questions)
    for j in judgments:
        q = next(x for x in questions if x.question_id == j["question_id"])
        assert j["score"] == overlap_score(answers[q.question_id][j["turn"] - 1], q.reference[j["turn"] - 1])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["score"] == pytest.approx(sum(j["score"] for j in judgments) / len(judgments))
    assert results["unparseable"] == 0 and metrics["mt_bench/score"] == pytest.approx(results["score"])
    assert set(results["per_turn"]) == {str(t) for t in range(1, max(len(q.turns) for q in questions) + 1)}
    assert (tmp_path / "score_per_turn.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "model_judgment" / "standin_reference_overlap_single.jsonl").is_file()

    # Judging answers made elsewhere: the same answers give the same scores, and nothing is generated.
    other = tmp_path / "judged_elsewhere"
    cfg2, _ = run_eval(
        other, tiny_hf_dir, [f"task.answers={tmp_path / 'model_answer' / f'{model_id}.jsonl'}"]
    )
    again = [json.loads(x) for x in (other / "judgments.jsonl").read_text().splitlines()]
    assert [j["score"] for j in again] == [j["score"] for j in judgments]
    assert not (other / "model_answer").exists()


def test_extension_is_written_once_and_marked(tmp_path, tiny_hf_dir):
    from evaluation.mt_bench.fastchat_format import read_questions

    model = f"{{backend: hf, path: {tiny_hf_dir}, dtype: float32, sampling: {{temperature: 1.0, max_new_tokens: 6, seed: 3}}}}"
    extra = ["task.extend_to=5", f"task.ask_model={model}", f"task.reference_model={model}", "task.limit=2"]
    run_eval(tmp_path, tiny_hf_dir, extra)
    extended = read_questions(tmp_path / "question_extended.jsonl")
    assert len(extended) == 2 and all(len(q.turns) == 5 for q in extended), [q.turns for q in extended]
    for q in extended:
        n_orig = len(q.turns) - len(q.generated_turns)
        assert q.generated_turns == list(range(n_orig, len(q.turns)))
        # the bundled questions carry references: the reference model wrote those of the extended turns
        assert len(q.reference) == 5 and q.extension["references_by_model"] == list(range(n_orig + 1, 6))
        cond = q.extension["conditioned_on"]
        assert [c["from"] for c in cond[:n_orig]] == ["reference answers"] * n_orig
        assert [c["answer"] for c in cond] == q.reference
    before = (tmp_path / "question_extended.jsonl").read_bytes()
    run_eval(tmp_path, tiny_hf_dir, extra)  # reused, not rewritten
    assert (tmp_path / "question_extended.jsonl").read_bytes() == before
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["generated_turns"] == sum(len(q.generated_turns) for q in extended)
    assert results["graded_without_reference"] == 0


def test_mt_bench_needs_a_judge(tmp_path, tiny_hf_dir):
    from eval import evaluate
    from utils.errors import ConfigError

    cfg = compose_cfg(
        ["task=mt_bench", "model=hf", f"model.pretrained={tiny_hf_dir}"], tmp_path, config_name="eval"
    )
    with pytest.raises(ConfigError, match="task=mt_bench needs a judge"):
        evaluate(cfg)


class Scripted:
    def __init__(self, reply):
        self.reply, self.prompts = reply, []

    def generate(self, prompts, ids=None):
        from inference.backends.base import Completion

        self.prompts += list(prompts)
        return [[Completion(self.reply(p), 1, 1)] for p in prompts]


def test_extend_questions_from_a_named_source_with_scripted_models():
    from evaluation.mt_bench.extension import Source, extend_questions
    from evaluation.mt_bench.fastchat_format import Question
    from inference.chat import NextTurn
    from utils.errors import ConfigError

    ref_model = Scripted(lambda p: f"ref answer to {p[-1]['content']}")
    ask = Scripted(
        lambda p: "" if p.messages[0]["content"] == "stop here" else f"follow-up {len(p.messages) // 2}"
    )
    qs = [
        Question(1, "writing", ["first?"]),
        Question(2, "math", ["a?", "b?"], ["A.", "B."]),
        Question(3, "stem", ["stop here"]),
        Question(4, "math", ["x?", "y?", "z?"], ["X.", "Y.", "Z."]),
    ]
    source = Source("reference answers", {q.question_id: q.reference or [] for q in qs})
    out = extend_questions(qs, 3, ask, source, ref_model, {"ask_model": "ask", "reference_model": "ref"})
    assert out[0].turns == ["first?", "follow-up 1", "follow-up 2"] and out[0].generated_turns == [1, 2]
    assert out[0].reference is None  # a writing question without references gets none
    assert [c["from"] for c in out[0].extension["conditioned_on"]] == ["ref", "ref", "ref"]
    assert out[1].turns == ["a?", "b?", "follow-up 2"]
    # the follow-up was conditioned on the reference answers, and the reference model wrote turn 3's reference
    assert out[1].reference == ["A.", "B.", "ref answer to follow-up 2"]
    assert out[1].extension["references_by_model"] == [3]
    assert [c["from"] for c in out[1].extension["conditioned_on"]] == ["reference answers"] * 2 + ["ref"]
    assert out[2].turns == ["stop here"] and out[2].generated_turns == []  # an empty follow-up stops it
    assert out[3] == qs[3] and out[3].extension is None  # already long enough: untouched
    assert qs[0].turns == ["first?"]  # the input questions are left as they were
    math_ask = next(p for p in ask.prompts if p.messages[0]["content"] == "a?")
    assert isinstance(math_ask, NextTurn) and math_ask.role == "user"
    assert list(math_ask.messages) == [
        {"role": "user", "content": "a?"},
        {"role": "assistant", "content": "A."},
        {"role": "user", "content": "b?"},
        {"role": "assistant", "content": "B."},
    ]
    # No reference model: one follow-up is possible (conditioned on the source), no reference for it.
    one = extend_questions(qs[1:2], 3, Scripted(lambda p: "more?"), source)
    assert one[0].turns == ["a?", "b?", "more?"] and one[0].reference == ["A.", "B."]
    with pytest.raises(ConfigError, match="question 2 needs an answer to turn 3 .* set task.reference_model"):
        extend_questions(qs[1:2], 4, ask, source)
    # extend_from: another named source (a model_answer file's answers)
    other = extend_questions(qs[1:2], 3, ask, Source("model answers m.jsonl", {2: ["M1", "M2"]}))
    assert [c["answer"] for c in other[0].extension["conditioned_on"]] == ["M1", "M2"]
    assert other[0].extension["source"] == "model answers m.jsonl"
