"""The benchmark registry (issue #16): every registered benchmark reads hand-written rows in its hub
schema into the right question, options and gold, and scores model outputs as the papers do; local
files in the hub schema load through the data module, few-shot pools from the train split."""

from __future__ import annotations

import json

import pytest

from reasoning.answers import answers_match, extract_answer
from reasoning.benchmarks import benchmark_record, benchmark_spec, load_benchmark, registered_benchmarks
from tests.benchmark_rows import CASES
from utils.errors import ConfigError, DataError

RLMEC = ["gsm8k", "math", "svamp", "mmlu_math", "ecqa", "qasc", "openbookqa", "arc_easy"]
SELF_AGREEMENT = ["gsm8k", "svamp", "multiarith", "csqa", "strategyqa", "arc_challenge"]


def _score(rec, text: str) -> tuple[str | None, bool]:
    pred = extract_answer(text, rec.answer_type, "auto", rec.num_choices, rec.choices)
    return pred, answers_match(pred, rec.gold, rec.answer_type, rec.tolerance)


def test_the_registry_holds_both_papers_benchmarks() -> None:
    assert set(registered_benchmarks()) == set(RLMEC) | set(SELF_AGREEMENT) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hub_rows_map_extract_and_score(name: str) -> None:
    case, spec = CASES[name], benchmark_spec(name)
    rec = benchmark_record(case["row"], spec, f"{name}:1", 1)
    assert rec.question == case["question"] and rec.gold == case["gold"]
    assert list(rec.choices) == case["choices"] and rec.task == name and rec.id.startswith(f"{name}/")
    assert _score(rec, case["right"])[1] is True
    pred, ok = _score(rec, case["wrong"])
    assert pred is not None and ok is False
    assert _score(rec, case["unparsed"]) == (None, False)


def test_gold_formats_read_each_hub_layout() -> None:
    gsm = benchmark_record(CASES["gsm8k"]["row"], benchmark_spec("gsm8k"), "g:1", 1)
    assert gsm.rationale == "She has 12 - 5 = 7 left." and gsm.tolerance == 1e-4  # calculator marks gone
    math = benchmark_record(CASES["math"]["row"], benchmark_spec("math"), "m:1", 1)
    assert math.answer_type == "math" and math.rationale.endswith("$\\boxed{\\frac{1}{2}}$.")
    ecqa = benchmark_record(CASES["ecqa"]["row"], benchmark_spec("ecqa"), "e:1", 1)
    assert ecqa.rationale == "Oceans hold salt water." and ecqa.id == "ecqa/test/e-17"
    # ARC's numeric answer keys are looked up in the labels: "3" is the third option, C
    arc = benchmark_record(CASES["arc_easy"]["row"], benchmark_spec("arc_easy"), "a:1", 1)
    assert arc.gold == "C"
    bad = {**CASES["mmlu_math"]["row"], "answer": 7}
    with pytest.raises(DataError, match=r"m:1: column 'answer'=7 is not an option index 0\.\.3"):
        benchmark_record(bad, benchmark_spec("mmlu_math"), "m:1", 1)
    with pytest.raises(DataError, match=r"x:2: missing column 'Body'"):
        benchmark_record({"Question": "q", "Answer": 1.0}, benchmark_spec("svamp"), "x:2", 2)
    with pytest.raises(DataError, match=r"no \\boxed\{\} answer"):
        benchmark_record({"problem": "p", "solution": "It is 4."}, benchmark_spec("math"), "m:3", 3)


def test_specs_are_validated_and_unknown_names_listed() -> None:
    with pytest.raises(ConfigError) as e:
        benchmark_spec("gsm9k")
    assert "'gsm9k' is not a registered benchmark" in str(e.value) and "csqa" in str(e.value)
    with pytest.raises(ConfigError) as e:
        benchmark_spec({"name": "b", "gold": "hash", "answer_type": "number", "comparison": "option"})
    problems = e.value.problems
    assert (
        "task.benchmark.hub.path is required" in problems
        and "task.benchmark.fields.question is required" in problems
    )
    assert any("gold='hash'" in p for p in problems) and any("compared by 'numeric'" in p for p in problems)


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_local_files_in_the_hub_schema_and_the_train_split_pool(tmp_path) -> None:
    from datamodules.benchmarks import BenchmarkQuestionDataModule

    test = _write(tmp_path / "csqa_val.jsonl", [CASES["csqa"]["row"]] * 2)
    with pytest.raises(DataError, match="duplicate id 'csqa/validation/cs-2'"):
        load_benchmark(benchmark_spec("csqa"), test)
    gsm = _write(tmp_path / "gsm.jsonl", [CASES["gsm8k"]["row"], CASES["gsm8k"]["train"]])
    csqa = _write(tmp_path / "csqa.jsonl", [CASES["csqa"]["row"]])
    pool = _write(tmp_path / "train.jsonl", [CASES["gsm8k"]["train"]])
    csqa_pool = _write(tmp_path / "csqa_train.jsonl", [CASES["csqa"]["train"]])
    dm = BenchmarkQuestionDataModule(
        ["gsm8k", "csqa"],
        paths={"gsm8k": gsm, "csqa": csqa},
        fewshot_paths={"gsm8k": pool, "csqa": csqa_pool},
        num_fewshot=1,
    )
    dm.setup()
    assert [r.id for r in dm.records] == ["gsm8k/test/1", "gsm8k/test/2", "csqa/validation/cs-2"]
    assert [r.id for r in dm.fewshot_pool] == ["gsm8k/train/1", "csqa/train/cs-1"]
    dm = BenchmarkQuestionDataModule(["gsm8k"], path=gsm, fewshot_path=pool, num_fewshot=1, limit=1)
    dm.setup()
    assert [r.id for r in dm.records] == ["gsm8k/test/1"] and [r.id for r in dm.fewshot_pool] == [
        "gsm8k/train/1"
    ]
    assert dm.task_descriptions == {"gsm8k": benchmark_spec("gsm8k").description}
    with pytest.raises(ConfigError, match="data.path names one file but there are 2 benchmarks"):
        BenchmarkQuestionDataModule(["gsm8k", "csqa"], path=gsm)
