"""Self-Agreement's scenario grid for real (arXiv 2311.08154; issue #16 §3): for every registered
benchmark, ``question_type_known`` switches the benchmark's description and same-benchmark exemplars,
and ``answer_format_known`` switches the answer-format instruction; exemplars come from the train split."""

from __future__ import annotations

import json

import pytest

from reasoning.benchmarks import benchmark_record, benchmark_spec
from reasoning.prompts import FORMAT_INSTRUCTIONS, GENERIC_INSTRUCTION, PromptSettings, build_cot_text
from tests.benchmark_rows import CASES
from tests.helpers import compose_cfg

NAMES = sorted(CASES)
DESCRIPTIONS = {n: benchmark_spec(n).description for n in NAMES}


def _rec(name: str, split: str = "row"):
    spec = benchmark_spec(name)
    return benchmark_record(CASES[name][split], spec, f"{name}:1", 1, "train" if split == "train" else None)


POOL = [_rec(n, "train") for n in NAMES]


def _prompt(name: str, **grid) -> str:
    return build_cot_text(_rec(name), PromptSettings(task_descriptions=DESCRIPTIONS, **grid), POOL)


@pytest.mark.parametrize("name", NAMES)
def test_question_type_axis_changes_every_benchmarks_prompt(name: str) -> None:
    known, unknown = _prompt(name, question_type_known=True), _prompt(name, question_type_known=False)
    assert known != unknown
    assert known.startswith(DESCRIPTIONS[name] + "\n") and DESCRIPTIONS[name] not in unknown
    assert known.endswith(f"Question: {unknown.split('Question: ', 1)[1]}")  # the same question after it


@pytest.mark.parametrize("name", NAMES)
def test_answer_format_axis_changes_every_benchmarks_prompt(name: str) -> None:
    rec = _rec(name)
    known, unknown = _prompt(name, answer_format_known=True), _prompt(name, answer_format_known=False)
    fmt = FORMAT_INSTRUCTIONS[rec.answer_type].format(letters=", ".join("ABCDEFGH"[: len(rec.choices)]))
    assert known != unknown and fmt in known and fmt not in unknown and GENERIC_INSTRUCTION in unknown


def test_fewshot_exemplars_come_from_the_train_split_same_benchmark_only_when_known() -> None:
    by_question = {r.question: r.task for r in POOL}

    def exemplar_tasks(name: str, known: bool) -> list[str]:
        text = _prompt(name, question_type_known=known, num_fewshot=3 if not known else 1, fewshot_seed=5)
        blocks = [b for b in text.split("\n\n") if b.startswith("Question: ") and "\nAnswer: " in b]
        return [next(t for q, t in by_question.items() if b.startswith(f"Question: {q}")) for b in blocks]

    for name in NAMES:
        assert exemplar_tasks(name, known=True) == [name]  # the benchmark's own train row
        assert exemplar_tasks(name, known=False) == exemplar_tasks(name, known=False)  # seeded
    mixed = {t for name in NAMES for t in exemplar_tasks(name, known=False)}
    assert len(mixed) > 3  # the unknown scenario draws from the whole pool
    gsm = _prompt("gsm8k", num_fewshot=1)
    assert "Answer: 3 + 4 = 7 The answer is 7." in gsm  # the train row's rationale and its gold


def test_the_shipped_benchmark_task_switches_both_axes(tmp_path) -> None:
    from datamodules.benchmarks import BenchmarkQuestionDataModule
    from reasoning.prompts import build_cot_prompt
    from runners.reasoning import build_spec, with_benchmark_prompts

    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps(CASES["gsm8k"]["row"]) + "\n")
    prompts = {}
    for qt in ("true", "false"):
        for af in ("true", "false"):
            over = ["task=gsm8k", f"data.path={data}", f"prompt.question_type_known={qt}"]
            cfg = compose_cfg([*over, f"prompt.answer_format_known={af}"], tmp_path, config_name="eval")
            dm = BenchmarkQuestionDataModule(**{k: v for k, v in cfg.data.items() if k != "_target_"})
            dm.setup()
            spec = with_benchmark_prompts(build_spec(cfg), dm)
            prompts[qt, af] = build_cot_prompt(dm.records[0], spec.prompt, spec.fewshot_pool)[-1]["content"]
            assert cfg.decoding.max_new_tokens == 512  # the benchmark's length, not the decoding default
    assert len({json.dumps(p) for p in prompts.values()}) == 4
    assert prompts["true", "true"].startswith(DESCRIPTIONS["gsm8k"])
