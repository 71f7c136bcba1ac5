"""The ``rlmec_sample`` stage (METHODS.md §3, step 1): n solutions per problem from the policy
(default n = 5, T = 0.7, top_p = 0.95), each labelled correct or wrong by answer match with the
reasoning eval's extraction (:mod:`reasoning.answers`).

The prompt is the reasoning eval's chain-of-thought prompt (``stage.prompt``: the same settings as
``data.prompt`` of reasoning SFT and ``prompt`` of eval.py), so the policy samples what it was trained
and is evaluated on. Problems whose gold answer can't be parsed are counted and skipped.

Resuming: the policy answers through the shared generation cache (``stage.cache``), appended after
every chunk of ``stage.chunk_size`` problems; a rerun in the same run folder generates only the
missing problems, and ``samples.jsonl`` (written once, atomically) equals an uninterrupted run's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from inference.generation_cache import CachedGenerator, build_generator, open_cache
from reasoning.answers import answers_match, extract_answer
from reasoning.prompts import PromptSettings, build_cot_prompt
from reasoning.questions import ReasoningRecord
from stages.common import chunks, write_jsonl_atomic
from stages.rlmec.sample_records import BadRecord, BadRecords, problem_from_dict, problem_payload
from utils.errors import ConfigError, DataError
from utils.record_files import read_records

log = logging.getLogger(__name__)
STAGE = "rlmec_sample"


def load_problems(path: str, bad: BadRecords, limit: int | None = None) -> list[tuple[dict, ReasoningRecord]]:
    """``(raw record, parsed problem)`` for the usable problems of ``path`` (first ``limit``)."""
    out = []
    for raw in read_records(path, key="stage.input"):
        if limit is not None and len(out) >= limit:
            break
        default_id = raw.location.rsplit("/", 1)[-1]
        try:
            rec = problem_from_dict(raw.data, raw.location, default_id)
        except BadRecord as e:
            bad.add(raw.location, e)
            continue
        out.append(({**raw.data, "id": rec.id}, rec))
    return out


def label(rec: ReasoningRecord, text: str, mode: str = "auto") -> tuple[str | None, bool]:
    """The extracted answer of ``text`` and whether it matches the gold."""
    pred = extract_answer(text, rec.answer_type, mode, rec.num_choices, rec.choices)
    return pred, answers_match(pred, rec.gold, rec.answer_type, rec.tolerance)


def sample_problems(
    problems: Sequence[tuple[dict, ReasoningRecord]],
    generator: CachedGenerator,
    settings: PromptSettings,
    chunk_size: int = 64,
    extraction_mode: str = "auto",
    stats: Counter | None = None,
) -> list[dict[str, Any]]:
    """``generator.params.n`` labelled samples per problem, in problem order then sample order."""
    stats = stats if stats is not None else Counter()
    rows: list[dict[str, Any]] = []
    done = 0
    for part in chunks(list(problems), chunk_size):
        prompts = [build_cot_prompt(rec, settings) for _, rec in part]
        groups = generator.generate(prompts, ids=[rec.id for _, rec in part])
        for (raw, rec), prompt, group in zip(part, prompts, groups):
            for j, completion in enumerate(group):
                pred, ok = label(rec, completion.text, extraction_mode)
                stats["correct" if ok else "wrong"] += 1
                stats["no_answer"] += pred is None
                rows.append(
                    {
                        "id": f"{rec.id}#{j}",
                        "problem_id": rec.id,
                        "sample_index": j,
                        "problem": problem_payload(raw),
                        "prompt": prompt,
                        "response": completion.text,
                        "pred": pred,
                        "correct": ok,
                        "finish_reason": completion.finish_reason,
                    }
                )
        done += len(part)
        log.info("%s: sampled %d / %d problems", STAGE, done, len(problems))
    return rows


def prompt_settings(prompt_cfg: Any) -> PromptSettings:
    prompt = dict(prompt_cfg or {})
    try:
        settings = PromptSettings(**{k: v for k, v in prompt.items() if v is not None})
    except (TypeError, ValueError) as e:
        raise ConfigError([f"stage.prompt: {e}"]) from None
    if not settings.chat:
        raise ConfigError(["stage.prompt.chat must be true: the RL data is built from chat prompts"])
    return settings


def run(cfg: DictConfig) -> dict[str, Any]:
    """The stage from the composed ``generate.py`` config; returns its summary."""
    s = cfg.stage
    bad = BadRecords(s.on_bad_record)
    settings = prompt_settings(OmegaConf.to_container(s.prompt, resolve=True))
    problems = load_problems(s.input, bad, s.max_problems)
    if not problems:
        raise DataError(f"{s.input}: no usable problem ({bad.summary()})")
    gen_cfg = OmegaConf.to_container(s.generator, resolve=True)
    gen_cfg.setdefault("sampling", {})["stop"] = gen_cfg["sampling"].get("stop") or settings.stop_strings()
    generator = build_generator(
        gen_cfg,
        "stage.generator",
        open_cache(s.get("cache")),
        kind=f"{STAGE}/solution",
        chunk_size=int(s.chunk_size),
    )
    stats: Counter = Counter()
    rows = sample_problems(problems, generator, settings, int(s.chunk_size), s.extraction_mode, stats)
    n = write_jsonl_atomic(s.output, rows)
    if bad.counts:
        log.warning("%s: skipped bad problems: %s", STAGE, bad.summary())
    log.info("%s: wrote %d samples to %s (%s)", STAGE, n, s.output, dict(stats))
    return {
        "stage": STAGE,
        "output": str(s.output),
        "problems": len(problems),
        "samples": n,
        "correct_frac": stats["correct"] / max(1, n),
        "counts": dict(sorted(stats.items())),
        "bad_records": bad.summary(),
        "generator": generator.describe(),
        "generation": generator.counts(),
    }
