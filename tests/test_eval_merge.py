"""Shards of an evaluation (ranks, batches) merge into exactly the single-process results; the metrics are
a pure function of the sample rows; per-rank sample caches serve a rerun with another rank count."""

from __future__ import annotations

import json

import pytest

from datamodules.reasoning import shard
from evaluation.reasoning.evaluator import write_results
from evaluation.reasoning.scoring import merge_results, score_rows
from evaluation.reasoning.spec import ReasoningEvalSpec, SpecError
from inference.sample_cache import SampleCache
from tests.eval_fakes import HashBackend, questions

SPEC = ReasoningEvalSpec.from_config(
    {"methods": ["greedy", "self_consistency", "self_agreement"], "num_paths": 5, "ks": [1, 3, 5]},
    {"chat": True},
)


def test_single_run_metrics_have_the_expected_values() -> None:
    records = questions()
    res = SPEC.run(HashBackend(), records)
    rows = res["samples"]
    for key, name, k in (("greedy", "greedy", None), ("sc@3", "sc", "3"), ("sa@5", "sa", "5")):
        outs = [r[name] if k is None else r[name][k] for r in rows]
        assert res["metrics"][key]["correct"] == sum(o["correct"] for o in outs)
        assert res["metrics"][key]["accuracy"] == pytest.approx(sum(o["correct"] for o in outs) / len(rows))
        assert res["metrics"][key]["parse_failure_rate"] == pytest.approx(
            sum(o["pred"] is None for o in outs) / len(rows)
        )
    assert 0 < res["metrics"]["sc@5"]["accuracy"] < 1  # the fake is neither always right nor always wrong
    assert res["metrics"]["sa@5"]["calls_per_question"] == 6
    assert res["settings"]["pool"] == "mixed-task" and res["settings"]["tasks"] == {"arith": 11, "yesno": 3}


@pytest.mark.parametrize("world", [2, 3, 20])
def test_rank_shards_merge_to_the_single_process_result(world: int) -> None:
    records = questions()
    single = SPEC.run(HashBackend(), records)
    parts = []
    for rank in range(world):
        mine = shard(records, rank, world)
        if not mine:  # more ranks than questions: that rank has nothing to contribute
            parts.append(None)
            continue
        # Each rank evaluates its shard in batches of 2 questions and merges its batches first.
        batches = [SPEC.run(HashBackend(), mine[i : i + 2]) for i in range(0, len(mine), 2)]
        parts.append(merge_results(batches))
    merged = merge_results(parts, order=[r.id for r in records])
    assert merged["metrics"] == single["metrics"]
    assert merged["per_task"] == single["per_task"]
    assert merged["samples"] == single["samples"]
    assert merged["settings"] == single["settings"]
    assert merged["cache"]["generated_prompts"] == single["cache"]["generated_prompts"]


def test_metrics_recomputed_from_written_rows(tmp_path) -> None:
    res = SPEC.run(HashBackend(), questions())
    results_json, samples_jsonl = write_results(res, tmp_path)
    rows = [json.loads(line) for line in samples_jsonl.read_text().splitlines()]
    metrics, per_task = score_rows(rows)
    saved = json.loads(results_json.read_text())
    assert metrics == saved["metrics"] and per_task == saved["per_task"]


def test_merge_rejects_overlap_and_bad_order() -> None:
    records = questions(4)
    a, b = SPEC.run(HashBackend(), records[:3]), SPEC.run(HashBackend(), records[2:])
    with pytest.raises(ValueError, match="more than one part"):
        merge_results([a, b])
    with pytest.raises(ValueError, match="order does not match"):
        merge_results([a], order=[r.id for r in records])
    with pytest.raises(ValueError, match="at least one part"):
        merge_results([None])


def test_rank_caches_serve_a_rerun_with_another_rank_count(tmp_path) -> None:
    records = questions()
    for rank in range(2):  # a 2-rank run: one cache file per rank
        SPEC.run(
            HashBackend(), shard(records, rank, 2), cache=SampleCache(tmp_path / f"samples.rank{rank}.jsonl")
        )
    backend = HashBackend()
    cache = SampleCache(tmp_path / "samples.rank0.jsonl", read_also=[tmp_path / "samples.rank1.jsonl"])
    res = SPEC.run(backend, records, cache=cache)
    assert backend.prompts == 0  # every greedy, path and agreement output came from the two files
    assert res["cache"]["generated_prompts"] == {"greedy": 0, "paths": 0, "agreement": 0}
    assert res["metrics"] == SPEC.run(HashBackend(), records)["metrics"]
    # The other rank's file is read, never written.
    before = (tmp_path / "samples.rank1.jsonl").read_text()
    extra = questions(13)[11:13]
    SPEC.run(HashBackend(), extra, cache=cache)
    assert (tmp_path / "samples.rank1.jsonl").read_text() == before


def test_spec_defaults_aliases_and_problems() -> None:
    spec = ReasoningEvalSpec.from_config({"methods": ["self_agreement"]}, seed=7)
    assert spec.num_paths == 5 and spec.ks == (5,) and spec.methods == ("sa",)
    assert spec.sampling.temperature == 0.7 and spec.sampling.seed == 7 and spec.headline == "sa@5"
    assert ReasoningEvalSpec.from_config({"methods": ["greedy"]}).headline == "greedy"
    both = ReasoningEvalSpec.from_config({"methods": ["sc", "greedy"], "num_paths": 8, "ks": [8, 2]})
    assert both.ks == (2, 8) and both.headline == "sc@8"
    with pytest.raises(SpecError) as err:
        ReasoningEvalSpec.from_config(
            {"methods": ["beam"], "num_paths": 0, "temprature": 0.5},
            {"chat": True, "colour": "blue"},
            extraction_mode="fuzzy",
        )
    text = str(err.value)
    for needle in (
        "decoding.temprature is not a decoding setting",
        "prompt.colour is not a prompt setting",
        "decoding.methods=['beam']",
        "decoding.num_paths (m, sampled paths per question) must be an integer >= 1, got 0",
        "extraction_mode='fuzzy'",
    ):
        assert needle in text
    with pytest.raises(SpecError, match=r"ks=\[6\] must be integers with 1 <= k <= num_paths=5"):
        ReasoningEvalSpec.from_config({"methods": ["sa"], "ks": [6]})
    with pytest.raises(SpecError, match="top_p must be in"):
        ReasoningEvalSpec.from_config({"methods": ["sa"], "top_p": 0})
