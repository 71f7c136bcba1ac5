"""The ``rlmec_baseline_data`` stage: the training data of the paper's baselines from the same
``rlmec_sample`` output as RLMEC (METHODS.md §3; issue 9 §4).

- RFT (``stage.rft_output``): SFT chats ``{"messages": prompt + assistant answer}`` over the correct
  samples, deduplicated per problem (:func:`stages.rlmec.sample_records.dedup_correct`, as for RLMEC);
- DPO (``stage.dpo_output``): preference pairs ``{"messages": prompt, "chosen": a correct answer,
  "rejected": a wrong answer of the same problem, "group": problem id}``, read by ``data=preference``
  and trained with ``CaPOModule``. Each wrong sample is paired with the problem's correct samples in
  turn, at most ``stage.max_pairs_per_problem`` pairs per problem.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Any

from omegaconf import DictConfig

from stages.common import write_jsonl_atomic
from stages.rlmec.sample_records import SAMPLE_FIELDS, BadRecords, dedup_correct, iter_checked
from utils.errors import DataError

log = logging.getLogger(__name__)
STAGE = "rlmec_baseline_data"


def baseline_rows(
    samples: list[tuple[str, dict[str, Any], Any]], max_pairs_per_problem: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Counter]:
    """(RFT chats, DPO pairs, counts) from ``(file:line, sample, problem)`` triples."""
    kept, dropped = dedup_correct(samples)
    counts: Counter = Counter(duplicate_correct_dropped=dropped)
    rft = []
    by_problem: dict[str, dict[str, list[dict]]] = defaultdict(lambda: {"correct": [], "wrong": []})
    for _, data, _ in kept:
        answer = data["response"].strip()
        if not answer:
            counts["empty_response"] += 1
            continue
        side = "correct" if data["correct"] else "wrong"
        by_problem[str(data["problem_id"])][side].append(data)
        if data["correct"]:
            rft.append(
                {"id": data["id"], "messages": [*data["prompt"], {"role": "assistant", "content": answer}]}
            )
    dpo = []
    for pid, sides in by_problem.items():
        if not sides["correct"] or not sides["wrong"]:
            counts["problems_without_pair"] += 1
            continue
        for i, wrong in enumerate(sides["wrong"]):
            if max_pairs_per_problem is not None and i >= max_pairs_per_problem:
                break
            chosen = sides["correct"][i % len(sides["correct"])]
            dpo.append(
                {
                    "messages": chosen["prompt"],
                    "chosen": chosen["response"].strip(),
                    "rejected": wrong["response"].strip(),
                    "neg_type": "wrong_answer",
                    "group": pid,
                }
            )
    counts["rft"], counts["dpo"] = len(rft), len(dpo)
    return rft, dpo, counts


def run(cfg: DictConfig) -> dict[str, Any]:
    """The stage from the composed ``generate.py`` config; returns its summary."""
    s = cfg.stage
    bad = BadRecords(s.on_bad_record)
    samples = list(iter_checked(s.input, SAMPLE_FIELDS, bad))
    cap = s.max_pairs_per_problem
    rft, dpo, counts = baseline_rows(samples, int(cap) if cap is not None else None)
    if not rft or not dpo:
        raise DataError(f"{s.input}: the baselines need correct and wrong samples ({dict(counts)})")
    write_jsonl_atomic(s.rft_output, rft)
    write_jsonl_atomic(s.dpo_output, dpo)
    log.info("%s: %d RFT chats, %d DPO pairs (%s)", STAGE, len(rft), len(dpo), dict(counts))
    return {
        "stage": STAGE,
        "rft_output": str(s.rft_output),
        "dpo_output": str(s.dpo_output),
        "rft": len(rft),
        "dpo": len(dpo),
        "counts": dict(sorted(counts.items())),
        "bad_records": bad.summary(),
    }
