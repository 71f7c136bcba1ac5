"""The ``rlmec_rl_data`` stage (METHODS.md §3, step 6): the RL records of ``RLMECModule``
(``datamodules/rlmec_token_data.py``) from the GRM's edits of every policy sample.

For every sample (correct solutions deduplicated per problem first, see
:func:`stages.rlmec.sample_records.dedup_correct`):

- ``prompt_ids`` / ``response_ids``: the policy tokenizer's chat render of (prompt, response)
  (:func:`~stages.rlmec.token_scoring.encode_sample`);
- ``rewards``: the GRM teacher-forces the SAME ``response_ids`` after the rewriting prompt (the
  "rewrite from step 1" prompt of :mod:`algorithms.edit_steps`, conditioned on the problem and the gold
  solution); p_t = exp(log P_GRM(y_t | …)) goes through ``grm_token_rewards`` (correct: clip(p−0.5, 0,
  0.5); wrong: clip(p−0.5, −0.1, 0));
- ``ref_logps``: log π_ref(y_t | x, y_<t) from the frozen initial policy (``stage.policy``);
- ``rewrite_ids`` / ``weights``: a correct sample imitates itself with all weights 0.5; a wrong sample
  with a kept GRM rewrite imitates its tokens with the weights of ``alignment.imitation_weights``; a
  wrong sample without one has no imitation target (empty lists).

Everything is written in policy token ids, so every per-token field is aligned by construction. The
GRM must use the policy's tokenizer (same vocabulary and special tokens): otherwise the stage stops
with one ``error:`` line. Scoring runs through the shared generation cache (``stage.cache``), so a
stopped run resumes and writes the same file.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from algorithms.alignment import imitation_weights
from algorithms.edit_steps import rewrite_messages
from algorithms.rlmec_records import RLMECTokenRecord
from algorithms.token_rewards import grm_token_rewards
from inference.generation_cache import CachedGenerator, open_cache
from stages.common import write_jsonl_atomic
from stages.rlmec.sample_records import EDIT_FIELDS, BadRecord, BadRecords, dedup_correct, iter_checked
from stages.rlmec.token_scoring import (
    TeacherForcedScorer,
    cached_scorer,
    encode_prompt_ids,
    encode_sample,
    score,
)
from utils.errors import ConfigError, DataError

log = logging.getLogger(__name__)
STAGE = "rlmec_rl_data"


def tokenizer_mismatch(policy_tok: Any, grm_tok: Any) -> str | None:
    """Why the GRM's tokenizer can't score the policy's token ids, or None when they agree."""
    if policy_tok.get_vocab() != grm_tok.get_vocab():
        return "their vocabularies differ"
    specials = ("bos_token_id", "eos_token_id")
    diff = [s for s in specials if getattr(policy_tok, s, None) != getattr(grm_tok, s, None)]
    return f"their {', '.join(diff)} differ" if diff else None


def build_rl_records(
    samples: Sequence[tuple[str, dict[str, Any], Any]],
    tokenizer: Any,
    reference: CachedGenerator,
    grm: CachedGenerator,
    grm_tokenizer: Any | None = None,
    bad: BadRecords | None = None,
    counts: Counter | None = None,
    chunk_size: int = 64,
) -> list[dict[str, Any]]:
    """RL records (see the module docstring) for ``(file:line, edit record, problem)`` triples."""
    bad = bad if bad is not None else BadRecords()
    counts = counts if counts is not None else Counter()
    grm_tokenizer = grm_tokenizer if grm_tokenizer is not None else tokenizer
    kept, dropped = dedup_correct(samples)
    counts["duplicate_correct_dropped"] += dropped
    rows: list[dict[str, Any]] = []
    for start in range(0, len(kept), max(1, chunk_size)):
        part = kept[start : start + chunk_size]
        encoded = []
        for where, data, problem in part:
            try:
                prompt_ids, response_ids = encode_sample(tokenizer, data["prompt"], data["response"])
                rewrite_ids: list[int] = []
                if data["correct"]:
                    rewrite_ids = list(response_ids)
                elif data.get("rewrite"):
                    _, rewrite_ids = encode_sample(tokenizer, data["prompt"], data["rewrite"])
                grm_prompt = encode_prompt_ids(grm_tokenizer, rewrite_messages(problem, data["response"], 1))
            except BadRecord as e:
                bad.add(where, e)
                continue
            encoded.append((data, prompt_ids, response_ids, rewrite_ids, grm_prompt))
        ids = [str(e[0]["id"]) for e in encoded]
        ref = score(reference, [(e[1], e[2]) for e in encoded], ids)
        grm_logps = score(grm, [(e[4], e[2]) for e in encoded], ids)
        for (data, prompt_ids, response_ids, rewrite_ids, _), ref_lp, grm_lp in zip(encoded, ref, grm_logps):
            probs = torch.tensor(grm_lp, dtype=torch.float64).exp().clamp(0.0, 1.0)
            rewards = grm_token_rewards(probs, bool(data["correct"])).tolist()
            weights = imitation_weights(response_ids, rewrite_ids, correct=bool(data["correct"]))
            counts["correct" if data["correct"] else "wrong"] += 1
            counts["wrong_without_rewrite"] += not data["correct"] and not rewrite_ids
            record = RLMECTokenRecord(
                id=data["id"],
                problem_id=data["problem_id"],
                correct=bool(data["correct"]),
                prompt_ids=prompt_ids,
                response_ids=response_ids,
                rewards=rewards,
                ref_logps=ref_lp,
                rewrite_ids=rewrite_ids,
                weights=weights,
            )
            rows.append(record.to_json())
        log.info("%s: scored %d / %d samples", STAGE, start + len(part), len(kept))
    return rows


def reward_stats(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The non-zero-reward fraction and the mean token reward on correct and on wrong samples (None
    when there is no such sample)."""
    tokens = sum(len(r["rewards"]) for r in rows)
    nonzero = sum(v != 0 for r in rows for v in r["rewards"])
    out: dict[str, float | None] = {"nonzero_reward_frac": nonzero / max(1, tokens)}
    for name, flag in (("correct", True), ("wrong", False)):
        values = [v for r in rows if r["correct"] is flag for v in r["rewards"]]
        out[f"mean_reward_{name}"] = sum(values) / len(values) if values else None
    return out


def load_scorer(model_cfg: Any, what: str) -> tuple[TeacherForcedScorer, Any]:
    """A scorer and its tokenizer from ``{path, dtype, device, batch_size}``."""
    from inference.backends.hf import HFBackend

    if not model_cfg.get("path"):
        raise ConfigError([f"{what}.path is required: the model folder"])
    hf = HFBackend.from_pretrained(
        str(model_cfg.path), dtype=model_cfg.get("dtype", "auto"), device=model_cfg.get("device", "cpu")
    )
    scorer = TeacherForcedScorer(hf.model, hf.pad_token_id, int(model_cfg.get("batch_size", 8)), hf.model_id)
    return scorer, hf.tokenizer


def run(cfg: DictConfig) -> dict[str, Any]:
    """The stage from the composed ``generate.py`` config; returns its summary."""
    s = cfg.stage
    bad = BadRecords(s.on_bad_record)
    samples = list(iter_checked(s.input, EDIT_FIELDS, bad))
    if not samples:
        raise DataError(f"{s.input}: no usable sample ({bad.summary()})")
    policy, tokenizer = load_scorer(s.policy, "stage.policy")
    grm, grm_tokenizer = load_scorer(s.grm, "stage.grm")
    why = tokenizer_mismatch(tokenizer, grm_tokenizer)
    if why:
        raise ConfigError(
            [
                f"stage.grm ({s.grm.path}) and stage.policy ({s.policy.path}) use different tokenizers: {why}; "
                "the token rewards must be computed on the policy's tokens"
            ]
        )
    cache = open_cache(s.get("cache"))
    chunk = int(s.chunk_size)
    counts: Counter = Counter()
    rows = build_rl_records(
        samples,
        tokenizer,
        cached_scorer(policy, cache, f"{STAGE}/ref_logps", chunk),
        cached_scorer(grm, cache, f"{STAGE}/grm_logps", chunk),
        grm_tokenizer,
        bad,
        counts,
        chunk,
    )
    if not rows:
        raise DataError(f"{s.input}: no RL record could be made ({bad.summary()})")
    n = write_jsonl_atomic(s.output, rows)
    stats = reward_stats(rows)
    log.info("%s: wrote %d RL records to %s (%s; %s)", STAGE, n, s.output, dict(counts), stats)
    return {
        "stage": STAGE,
        "output": str(s.output),
        "records": n,
        **stats,
        "counts": dict(sorted(counts.items())),
        "bad_records": bad.summary(),
    }
