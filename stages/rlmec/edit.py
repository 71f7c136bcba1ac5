"""The ``rlmec_edit`` stage (METHODS.md §3, steps 2 and 5): the two-step minimum-edit procedure
(:func:`algorithms.minimum_edit.minimum_edit_rewrite`) over the samples of ``rlmec_sample``.

``stage.editor`` is either ``{backend: arith_rules}`` (the STAND-IN teacher for the bundled
arithmetic, :mod:`stages.rlmec.arith_rules`) or any generation backend config (``hf`` | ``vllm`` |
``openai_http`` with its keys and ``sampling``): a strong teacher model makes the GRM's training data,
the trained GRM rewrites every sample. Each output record is its sample plus ``rewrite`` (the kept
rewrite, the response itself for a correct sample, or null), ``edit_status`` (identity | rewritten |
dropped), ``first_error_step``, ``drop_reason``, ``locate_reply`` and ``rewrite_reply``. Replies that
can't be used (no step index, a step out of range, a wrong rewrite, ...) are counted by reason.

Resuming: a model editor answers through the shared generation cache (``stage.cache``), appended after
every chunk; a rerun generates only the missing replies and writes the same ``edits.jsonl``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from algorithms.minimum_edit import Editor, minimum_edit_rewrite
from inference.generation_cache import CachedGenerator, build_generator, open_cache
from stages.common import chunks, write_jsonl_atomic
from stages.rlmec.arith_rules import arith_rules
from stages.rlmec.sample_records import SAMPLE_FIELDS, BadRecords, iter_checked
from utils.errors import DataError

log = logging.getLogger(__name__)
STAGE = "rlmec_edit"
RULE_EDITORS = {"arith_rules": arith_rules}


def build_editor(editor_cfg: dict[str, Any], cache: Any, chunk_size: int) -> tuple[Editor, dict[str, Any]]:
    """(the editor, its description) from ``stage.editor``."""
    name = editor_cfg.get("backend", "hf")
    if name in RULE_EDITORS:
        return RULE_EDITORS[name], {"editor": name, "note": "rule-based stand-in teacher, not a model"}
    generator: CachedGenerator = build_generator(
        editor_cfg, "stage.editor", cache, kind=f"{STAGE}/editor", chunk_size=chunk_size
    )

    def edit(requests: Sequence[Any]) -> list[str]:
        return generator([r.messages for r in requests]) if requests else []

    edit.generator = generator  # type: ignore[attr-defined]
    return edit, generator.describe()


def edit_samples(
    samples: Sequence[tuple[dict[str, Any], Any]],
    editor: Editor,
    chunk_size: int = 64,
    extraction_mode: str = "auto",
    counts: Counter | None = None,
) -> list[dict[str, Any]]:
    """Each ``(sample record, its problem)`` plus its edit fields, in input order."""
    counts = counts if counts is not None else Counter()
    out: list[dict[str, Any]] = []
    for part in chunks(list(samples), chunk_size):
        report = minimum_edit_rewrite(
            [p for _, p in part],
            [s["response"] for s, _ in part],
            [s["correct"] for s, _ in part],
            editor,
            extraction_mode,
        )
        for (sample, _), res in zip(part, report.results):
            counts[res.status] += 1
            if res.reason:
                counts[f"dropped_{res.reason}"] += 1
            out.append(
                {
                    **sample,
                    "rewrite": res.rewrite if res.status != "dropped" else None,
                    "edit_status": res.status,
                    "first_error_step": res.first_error_step,
                    "drop_reason": res.reason,
                    "locate_reply": res.locate_reply,
                    "rewrite_reply": res.rewrite_reply,
                }
            )
        log.info("%s: edited %d / %d samples", STAGE, len(out), len(samples))
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    """The stage from the composed ``generate.py`` config; returns its summary."""
    s = cfg.stage
    bad = BadRecords(s.on_bad_record)
    samples = [(data, problem) for _, data, problem in iter_checked(s.input, SAMPLE_FIELDS, bad)]
    if not samples:
        raise DataError(f"{s.input}: no usable sample ({bad.summary()})")
    editor, info = build_editor(
        OmegaConf.to_container(s.editor, resolve=True), open_cache(s.get("cache")), int(s.chunk_size)
    )
    counts: Counter = Counter()
    rows = edit_samples(samples, editor, int(s.chunk_size), s.extraction_mode, counts)
    n = write_jsonl_atomic(s.output, rows)
    dropped = {k: v for k, v in counts.items() if k.startswith("dropped_")}
    if dropped:
        log.warning("%s: wrong samples without a rewrite, by reason: %s", STAGE, dropped)
    wrong = counts["rewritten"] + counts["dropped"]
    summary = {
        "stage": STAGE,
        "output": str(s.output),
        "samples": n,
        "rewritten_frac_of_wrong": counts["rewritten"] / max(1, wrong),
        "counts": dict(sorted(counts.items())),
        "bad_records": bad.summary(),
        "editor": info,
    }
    generator = getattr(editor, "generator", None)
    if generator is not None:
        summary["generation"] = generator.counts()
    return summary
