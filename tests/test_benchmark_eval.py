"""``eval.py task=gsm8k data.path=<a local GSM8K-schema file> decoding=all`` on the tiny model (issue #16,
"Must show"): results.json agrees with a re-scoring of samples.jsonl done here by hand, from the
file's own "#### N" golds and a majority vote written out below."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

from reasoning.answers import extract_answer
from tests.helpers import compose_cfg

DATA = Path(__file__).resolve().parents[1] / "data" / "benchmarks" / "gsm8k_sample.jsonl"


def _right(pred: str | None, gold: int) -> bool:
    return pred is not None and abs(Fraction(pred) - gold) <= Fraction(1, 10**4) * max(1, abs(gold))


def _vote(preds: list[str | None]) -> str | None:
    seen = [p for p in preds if p is not None]
    if not seen:
        return None
    counts = Counter(seen)
    return next(p for p in seen if counts[p] == max(counts.values()))


def _rescore(rows: list[dict], golds: list[int]) -> dict[str, tuple[int, int]]:
    """``{method: (correct, parse failures)}`` from the texts alone."""
    out: dict[str, list[int]] = {"greedy": [0, 0], "sc@3": [0, 0], "sa@3": [0, 0]}
    for row, gold in zip(rows, golds, strict=True):
        preds = {
            "greedy": extract_answer(row["greedy"]["text"], "number"),
            "sc@3": _vote([extract_answer(p["text"], "number") for p in row["paths"]]),
            "sa@3": extract_answer(row["sa"]["3"]["text"], "number"),
        }
        assert row["greedy"]["pred"] == preds["greedy"] and row["sa"]["3"]["pred"] == preds["sa@3"]
        assert row["sc"]["3"]["pred"] == preds["sc@3"] and row["gold"] == str(gold)
        for key, pred in preds.items():
            out[key][0] += _right(pred, gold)
            out[key][1] += pred is None
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_gsm8k_task_on_a_local_hub_schema_file_matches_a_hand_rescoring(tmp_path, tiny_hf_dir) -> None:
    from eval import evaluate

    overrides = [
        "task=gsm8k",
        f"data.path={DATA}",
        "decoding=all",
        "decoding.num_paths=3",
        "decoding.max_new_tokens=16",
        "model=hf",
        f"model.pretrained={tiny_hf_dir}",
        "print_config=false",
        "progress=false",
    ]
    cfg = compose_cfg(overrides, tmp_path, config_name="eval")
    evaluate(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    golds = [int(json.loads(line)["answer"].rsplit("####", 1)[1]) for line in DATA.read_text().splitlines()]
    assert len(rows) == len(golds) == 6 and [r["id"] for r in rows] == [
        f"gsm8k/test/{i}" for i in range(1, 7)
    ]
    for key, (correct, failures) in _rescore(rows, golds).items():
        m, per_task = results["metrics"][key], results["per_task"]["gsm8k"][key]
        assert (m["correct"], m["parse_failures"], m["accuracy"]) == (correct, failures, correct / 6)
        assert (per_task["parse_failures"], per_task["num_questions"]) == (failures, 6)
    s = results["settings"]
    assert (
        s["task"] == "gsm8k"
        and s["benchmarks"][0]["hub"] == "openai/gsm8k"
        and s["data"]["path"] == str(DATA)
    )
    assert s["prompt"]["task_descriptions"]["gsm8k"].startswith("Grade-school math")
