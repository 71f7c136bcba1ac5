"""The ``rlmec_grm_data`` stage (METHODS.md §3, step 3): chat-format SFT data for the generative reward
model (GRM) from the teacher's edits (the ``rlmec_edit`` output with the teacher as the editor).

Every example is one user turn (the editor prompts of :mod:`algorithms.edit_steps`, conditioned on the
problem AND the gold solution) and one assistant turn, the target:

- ``locate`` (each rewritten wrong sample): the locate prompt -> ``The first error step is [k]``;
- ``rewrite`` (each rewritten wrong sample): the "rewrite from step k" prompt -> the continuation
  after the kept prefix (what the minimum-edit procedure asks the GRM for);
- ``rewrite_full`` (each rewritten wrong sample, ``stage.full_rewrites``): the "rewrite from step 1"
  prompt -> the whole rewrite. This is the rewriting prompt under which ``rlmec_rl_data`` teacher-forces
  the original solution for the token rewards, so the GRM learns it for wrong samples too;
- ``identity`` (correct samples, each kept with probability ``stage.identity_rate``, seeded by the
  sample id): the "rewrite from step 1" prompt -> the solution itself.

METHODS.md says the identity rewrites are subsampled but gives no rate; ``identity_rate`` is a
setting (default 0.2). Records: ``{"id", "kind", "problem_id", "messages"}``, read by ``data=chat``.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig

from algorithms.edit_steps import (
    first_error_reply,
    kept_prefix,
    locate_messages,
    rewrite_messages,
    split_steps,
)
from stages.common import write_jsonl_atomic
from stages.rlmec.sample_records import EDIT_FIELDS, BadRecords, iter_checked
from utils.errors import ConfigError, DataError

log = logging.getLogger(__name__)
STAGE = "rlmec_grm_data"


def keep_identity(sample_id: str, rate: float, seed: int) -> bool:
    """Whether a correct sample becomes an identity example (stable per id and seed)."""
    return random.Random(f"{seed}:{sample_id}").random() < rate


def grm_examples(
    samples: Iterable[tuple[dict[str, Any], Any]],
    identity_rate: float = 0.2,
    full_rewrites: bool = True,
    seed: int = 0,
    counts: Counter | None = None,
) -> list[dict[str, Any]]:
    """The GRM's SFT examples from ``(edit record, problem)`` pairs, in input order."""
    counts = counts if counts is not None else Counter()
    out: list[dict[str, Any]] = []

    def add(kind: str, sample: dict, prompt: list, target: str) -> None:
        counts[kind] += 1
        out.append(
            {
                "id": f"{sample['id']}/{kind}",
                "kind": kind,
                "problem_id": sample["problem_id"],
                "messages": [*prompt, {"role": "assistant", "content": target}],
            }
        )

    for sample, problem in samples:
        y = sample["response"]
        if sample["correct"]:
            if keep_identity(str(sample["id"]), identity_rate, seed):
                add("identity", sample, rewrite_messages(problem, y, 1), y.strip())
            else:
                counts["identity_subsampled_out"] += 1
            continue
        k, rewrite = sample.get("first_error_step"), sample.get("rewrite")
        if sample["edit_status"] != "rewritten" or not rewrite or not isinstance(k, int):
            counts["wrong_without_rewrite"] += 1
            continue
        steps = split_steps(y)
        if not 1 <= k <= len(steps):
            counts["step_out_of_range"] += 1
            continue
        prefix = kept_prefix(y, steps, k)
        if not rewrite.startswith(prefix):
            counts["rewrite_drops_prefix"] += 1
            continue
        add("locate", sample, locate_messages(problem, y), first_error_reply(k))
        add("rewrite", sample, rewrite_messages(problem, y, k), rewrite[len(prefix) :].strip())
        if full_rewrites:
            add("rewrite_full", sample, rewrite_messages(problem, y, 1), rewrite.strip())
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    """The stage from the composed ``generate.py`` config; returns its summary."""
    s = cfg.stage
    if not 0.0 <= float(s.identity_rate) <= 1.0:
        raise ConfigError([f"stage.identity_rate={s.identity_rate} must be in [0, 1]"])
    bad = BadRecords(s.on_bad_record)
    counts: Counter = Counter()
    rows = grm_examples(
        ((d, p) for _, d, p in iter_checked(s.input, EDIT_FIELDS, bad)),
        float(s.identity_rate),
        bool(s.full_rewrites),
        int(cfg.seed),
        counts,
    )
    if not rows:
        raise DataError(f"{s.input}: no GRM example could be made ({dict(counts)}, bad: {bad.summary()})")
    n = write_jsonl_atomic(s.output, rows)
    log.info("%s: wrote %d GRM examples to %s (%s)", STAGE, n, s.output, dict(counts))
    return {
        "stage": STAGE,
        "output": str(s.output),
        "examples": n,
        "counts": dict(sorted(counts.items())),
        "bad_records": bad.summary(),
    }
