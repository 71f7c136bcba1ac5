"""The RLMEC token record is defined once (algorithms/rlmec_records.py): the stage writes it, the data module reads it."""

from __future__ import annotations

from dataclasses import fields

from algorithms.rlmec_records import REQUIRED, RLMECTokenRecord
from datamodules.rlmec_token_data import validate_record


def test_the_record_the_stage_writes_is_the_record_the_data_module_reads():
    assert {f.name for f in fields(RLMECTokenRecord)} == {*REQUIRED, "id", "problem_id"}
    rec = RLMECTokenRecord(
        id="q1#0",
        problem_id="q1",
        correct=False,
        prompt_ids=[1, 2],
        response_ids=[3, 4, 5],
        rewards=[0.0, -0.1, 0.0],
        ref_logps=[-1.0, -2.0, -0.5],
        rewrite_ids=[3, 6],
        weights=[0.0, 1.0],
    )
    out = validate_record(rec.to_json(), "rl.jsonl:1", vocab=10)
    assert out["problem_id"] == "q1" and out["response_ids"] == [3, 4, 5] and out["weights"] == [0.0, 1.0]
    assert out["correct"] is False and out["rewards"] == [0.0, -0.1, 0.0]
