"""RLMEC's two-step minimum-edit procedure (METHODS.md §3, steps 2 and 5), one function for every
editor: the teacher that makes the GRM's training data and the trained GRM that rewrites samples.

For each wrong sample:

1. ask the editor for the first wrong step k of the prediction (``The first error step is [k]``);
2. keep the prediction's text before step k as a fixed prefix and ask the editor to continue from
   step k with minimal changes;
3. the rewrite = prefix + continuation; keep it only if its answer is right (the reasoning eval's
   answer extraction, :mod:`reasoning.answers`).

Correct samples are their own rewrite (ŷ = y) and cost no editor call.

An *editor* is a callable from a list of :class:`EditRequest` to one reply text per request. Any
generation model becomes one with :func:`model_editor` (a ``stages.common.ChatGenerator`` or an
``inference`` backend, decoded greedily): it answers ``request.messages``. Rule-based editors (the
``arith_rules`` stand-in teacher) read the structured fields instead. Replies of both kinds go
through the same parsers, and every dropped sample is counted by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from algorithms.edit_steps import (
    join_rewrite,
    kept_prefix,
    locate_messages,
    parse_continuation,
    parse_first_error,
    rewrite_messages,
    split_steps,
)
from reasoning.answers import answers_match, extract_answer
from reasoning.questions import ReasoningRecord

Message = dict[str, str]

#: Why a wrong sample got no rewrite.
DROP_REASONS = (
    "empty_prediction",  # the prediction has no step to locate
    "no_step_index",  # the locate reply names no step and does not say "correct"
    "step_out_of_range",  # the named step is not a step of the prediction
    "editor_says_correct",  # the editor found no wrong step in a wrong sample
    "empty_rewrite",  # the rewrite reply is empty
    "no_answer",  # the rewrite has no parseable answer
    "wrong_answer",  # the rewrite's answer is not the gold answer
)


@dataclass(frozen=True)
class EditRequest:
    """One question to the editor. ``kind`` is ``"locate"`` or ``"rewrite"``; ``messages`` is the chat
    prompt a model answers; ``step`` (k) and ``prefix`` are set for rewrites."""

    kind: str
    record: ReasoningRecord
    prediction: str
    messages: list[Message]
    step: int | None = None
    prefix: str = ""


Editor = Callable[[Sequence[EditRequest]], list[str]]


@dataclass
class EditResult:
    """The outcome for one sample.

    ``status``: ``"identity"`` (a correct sample: ``rewrite`` is the prediction), ``"rewritten"``
    (a kept rewrite) or ``"dropped"`` (``reason`` is one of :data:`DROP_REASONS`). ``first_error_step``
    is k when the editor named one; ``locate_reply`` / ``rewrite_reply`` are the raw replies.
    """

    status: str
    rewrite: str | None = None
    first_error_step: int | None = None
    reason: str | None = None
    locate_reply: str | None = None
    rewrite_reply: str | None = None


@dataclass
class EditReport:
    """All results, in sample order, and the counts by status and by drop reason."""

    results: list[EditResult]
    counts: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)


def model_editor(model: Any) -> Editor:
    """An editor that sends each request's chat prompt to ``model``: a ``ChatGenerator`` (prompts in,
    texts out) or an ``inference`` ``GenerationBackend`` (decoded greedily, first completion)."""
    from inference.backends.base import GenerationBackend

    if isinstance(model, GenerationBackend):
        from inference.generation_cache import CachedGenerator
        from inference.sampling import SamplingParams

        model = CachedGenerator(model, SamplingParams(temperature=0.0), kind="rlmec/editor")

    def edit(requests: Sequence[EditRequest]) -> list[str]:
        return list(model([r.messages for r in requests])) if requests else []

    return edit


def rewrite_is_correct(record: ReasoningRecord, text: str, mode: str = "auto") -> tuple[bool, str | None]:
    """(the answer of ``text`` matches the gold, the extracted answer) with the eval's extraction."""
    pred = extract_answer(
        text, record.answer_type, mode, num_choices=record.num_choices, choices=record.choices
    )
    return answers_match(pred, record.gold, record.answer_type, record.tolerance), pred


def _ask(editor: Editor, requests: list[EditRequest]) -> list[str]:
    replies = editor(requests) if requests else []
    if len(replies) != len(requests):
        raise ValueError(f"the editor returned {len(replies)} replies for {len(requests)} requests")
    return [str(r) for r in replies]


def minimum_edit_rewrite(
    records: Sequence[ReasoningRecord],
    predictions: Sequence[str],
    correct: Sequence[bool],
    editor: Editor,
    extraction_mode: str = "auto",
) -> EditReport:
    """Run the two-step minimum-edit procedure over samples (one batch of locate requests, then one
    batch of rewrite requests); see the module docstring. ``records[i]``, ``predictions[i]`` and
    ``correct[i]`` describe sample i."""
    if not len(records) == len(predictions) == len(correct):
        raise ValueError("records, predictions and correct must have the same length")
    results: list[EditResult | None] = [None] * len(records)
    locate: list[tuple[int, EditRequest]] = []
    for i, (rec, pred, ok) in enumerate(zip(records, predictions, correct)):
        if ok:
            results[i] = EditResult("identity", rewrite=pred)
        elif not split_steps(pred):
            results[i] = EditResult("dropped", reason="empty_prediction")
        else:
            locate.append((i, EditRequest("locate", rec, pred, locate_messages(rec, pred))))

    rewrite: list[tuple[int, EditRequest]] = []
    for (i, req), reply in zip(locate, _ask(editor, [r for _, r in locate])):
        steps = split_steps(req.prediction)
        parsed = parse_first_error(reply, len(steps))
        if parsed.step is None:
            reason = "editor_says_correct" if parsed.correct else parsed.error
            results[i] = EditResult("dropped", reason=reason, locate_reply=reply)
            continue
        k = parsed.step
        results[i] = EditResult("dropped", first_error_step=k, locate_reply=reply)  # until rewritten
        prefix = kept_prefix(req.prediction, steps, k)
        messages = rewrite_messages(req.record, req.prediction, k)
        rewrite.append(
            (i, EditRequest("rewrite", req.record, req.prediction, messages, step=k, prefix=prefix))
        )

    for (i, req), reply in zip(rewrite, _ask(editor, [r for _, r in rewrite])):
        res = results[i]
        res.rewrite_reply = reply
        continuation = parse_continuation(reply)
        if not continuation:
            res.reason = "empty_rewrite"
            continue
        text = join_rewrite(req.prefix, continuation)
        ok, pred = rewrite_is_correct(req.record, text, extraction_mode)
        if not ok:
            res.reason = "no_answer" if pred is None else "wrong_answer"
            continue
        res.status, res.rewrite = "rewritten", text

    final = [r for r in results if r is not None]
    report = EditReport(final)
    for r in final:
        report.counts[r.status] += 1
        if r.reason:
            report.dropped[r.reason] += 1
    return report
