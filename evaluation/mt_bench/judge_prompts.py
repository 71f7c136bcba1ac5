"""Judge prompts for multi-turn MT-Bench grading, single-answer (``[[rating]]``) and pairwise
(``[[A]]``/``[[B]]``/``[[C]]``), in FastChat's judge_prompts.jsonl terms.

Quartet's own prompts (written here) show the judge the whole dialogue so far, the turn to grade and,
for math, reasoning and coding, the reference answer of that turn. A user may pass their own FastChat
``judge_prompts.jsonl`` (``{"name", "type": "single"|"pairwise", "system_prompt", "prompt_template",
"output_format"}``); then only that file's prompts are used (never mixed with Quartet's), and a name the
run needs but the file lacks is one error before anything is generated (:func:`check_prompts`).

Fields a template may use for the graded turn k: ``{question}``, ``{answer}`` (pairwise ``{answer_a}``,
``{answer_b}``), ``{ref_answer}``, ``{history}`` (``{history_a}``, ``{history_b}``), and FastChat's
numbered fields ``{question_i}``, ``{answer_i}`` (``{answer_a_i}``, ``{answer_b_i}``), ``{ref_answer_i}``
(i from 1). Turns 1 and 2 render exactly as FastChat renders them (``str.format`` of the template);
for turn k >= 3 a two-turn template is repeated by :mod:`evaluation.mt_bench.template_turns`.
Prompts are chosen by name as FastChat names them (:func:`prompt_name`): ``single-v1`` /
``single-math-v1`` / ``pair-v2`` / ``pair-math-v1`` for the first turn, with ``-multi-turn`` for later
ones; the ``math`` ones where the turn has reference answers in a reference category.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from evaluation.mt_bench.temperatures import REFERENCE_CATEGORIES
from evaluation.mt_bench.template_turns import TemplateError, expand_template, fields, focus_ordinal
from utils.errors import QuartetError
from utils.text_files import iter_lines

_SYSTEM = (
    "You are an impartial judge of an AI assistant's replies in a conversation with a user. Grade only "
    "the reply you are asked about, taking the earlier conversation into account: a good reply follows "
    "the user's latest request, keeps to what was said before, and resolves words such as 'it' or "
    "'the second one' the way the conversation means them. Consider helpfulness, correctness, depth "
    "and clarity. Do not let the reply's length sway you. Explain your grade in a few sentences, then "
    'give it on the last line exactly as "Rating: [[N]]", where N is an integer from 1 to 10.'
)
_GENERAL = (
    "[Conversation so far]\n{history}\n\n[The user's latest message]\n{question}\n\n"
    "[The assistant's reply to grade]\n{answer}\n[End of the reply]"
)
_WITH_REFERENCE = (
    "[Conversation so far]\n{history}\n\n[The user's latest message]\n{question}\n\n"
    "[A reference answer to the latest message]\n{ref_answer}\n[End of the reference answer]\n\n"
    "[The assistant's reply to grade]\n{answer}\n[End of the reply]\n\n"
    "Compare the reply with the reference answer: a wrong result is a low grade however well it reads."
)


_PAIR_SYSTEM = (
    "You are an impartial judge comparing two AI assistants, A and B. Each held a conversation with the "
    "same user messages; compare only their replies to the user's latest message, taking each one's "
    "earlier conversation into account: a good reply follows the latest request, keeps to what was said "
    "before and resolves references to it correctly. Consider helpfulness, correctness, depth and clarity. "
    "The order in which the two are shown, their length and their names must not sway you. Explain your "
    'choice briefly, then give it on the last line exactly as "[[A]]" if A is better, "[[B]]" if B is '
    'better, or "[[C]]" for a tie.'
)
_PAIR_GENERAL = (
    "[Assistant A's conversation so far]\n{history_a}\n\n[Assistant B's conversation so far]\n{history_b}"
    "\n\n[The user's latest message]\n{question}\n\n[Assistant A's reply]\n{answer_a}\n[End of A's reply]"
    "\n\n[Assistant B's reply]\n{answer_b}\n[End of B's reply]"
)
_PAIR_WITH_REFERENCE = (
    _PAIR_GENERAL + "\n\n[A reference answer to the latest message]\n{ref_answer}\n[End of the reference "
    "answer]\n\nCheck both replies against the reference answer: a wrong result loses however well it reads."
)


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    system_prompt: str
    prompt_template: str
    type: str = "single"

    def fields(self) -> set[str]:
        return fields(self.prompt_template)


BUILTIN: dict[str, JudgePrompt] = {
    "single-v1": JudgePrompt("quartet-single-v1", _SYSTEM, _GENERAL),
    "single-math-v1": JudgePrompt("quartet-single-math-v1", _SYSTEM, _WITH_REFERENCE),
    "single-v1-multi-turn": JudgePrompt("quartet-single-v1-multi-turn", _SYSTEM, _GENERAL),
    "single-math-v1-multi-turn": JudgePrompt("quartet-single-math-v1-multi-turn", _SYSTEM, _WITH_REFERENCE),
    "pair-v2": JudgePrompt("quartet-pair-v2", _PAIR_SYSTEM, _PAIR_GENERAL, "pairwise"),
    "pair-math-v1": JudgePrompt("quartet-pair-math-v1", _PAIR_SYSTEM, _PAIR_WITH_REFERENCE, "pairwise"),
    "pair-v2-multi-turn": JudgePrompt("quartet-pair-v2-multi-turn", _PAIR_SYSTEM, _PAIR_GENERAL, "pairwise"),
    "pair-math-v1-multi-turn": JudgePrompt(
        "quartet-pair-math-v1-multi-turn", _PAIR_SYSTEM, _PAIR_WITH_REFERENCE, "pairwise"
    ),
}


def load_judge_prompts(path: str | Path | None) -> dict[str, JudgePrompt]:
    """Quartet's prompts, or (``path`` given) only the prompts of a FastChat judge_prompts.jsonl."""
    if path is None:
        return dict(BUILTIN)
    p = Path(path)
    if not p.is_file():
        raise QuartetError(f"task.judge_prompts={p}: no such file")
    prompts: dict[str, JudgePrompt] = {}
    for n, line in iter_lines(p):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            kind = row.get("type", "single")
            if kind not in ("single", "pairwise"):
                raise ValueError(f"type {kind!r} is neither 'single' nor 'pairwise'")
            prompts[row["name"]] = JudgePrompt(
                row["name"], row.get("system_prompt", ""), row["prompt_template"], kind
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise QuartetError(f"{p}:{n}: not a FastChat judge prompt ({type(e).__name__}: {e})") from None
    return prompts


def prompt_name(category: str, turn: int, pairwise: bool = False, reference: bool | None = None) -> str:
    """FastChat's prompt name for a turn (counted from 1): the ``math`` prompt for a reference category
    (``reference`` None) or wherever ``reference`` is True."""
    with_ref = category in REFERENCE_CATEGORIES if reference is None else reference
    if pairwise:
        base = "pair-math-v1" if with_ref else "pair-v2"
    else:
        base = "single-math-v1" if with_ref else "single-v1"
    return base if turn == 1 else f"{base}-multi-turn"


def has_reference(references: Sequence[str] | None, turn: int) -> bool:
    """Whether turns 1..``turn`` all have a non-empty reference answer (an empty one is never shown)."""
    return bool(references) and len(references) >= turn and all(r.strip() for r in references[:turn])


def format_history(questions: Sequence[str], answers: Sequence[str]) -> str:
    if not questions:
        return "(none: this is the first message)"
    return "\n\n".join(f"User: {q}\n\nAssistant: {a}" for q, a in zip(questions, answers))


def _values(
    questions: Sequence[str],
    answers: Mapping[str, Sequence[str]],
    turn: int,
    references: Sequence[str] | None,
) -> dict[str, str]:
    """Every field value for grading turn ``turn``; ``answers`` maps a slot suffix ("" single, "_a",
    "_b" pairwise) to that side's answers. Empty references are left out, so using one is an error."""
    i = turn - 1
    values = {"question": questions[i]}
    for slot, side in answers.items():
        values[f"history{slot}"] = format_history(questions[:i], side[:i])
        values[f"answer{slot}"] = side[i]
        for k in range(turn):
            values[f"answer{slot}_{k + 1}"] = side[k]
    for k in range(turn):
        values[f"question_{k + 1}"] = questions[k]
        if references and k < len(references) and references[k].strip():
            values[f"ref_answer_{k + 1}"] = references[k]
    if references and i < len(references) and references[i].strip():
        values["ref_answer"] = references[i]
    return values


def turn_template(prompt: JudgePrompt, turn: int, where: str = "judge prompt") -> str:
    """The template that grades turn ``turn`` (:func:`expand_template`); an error when it cannot show
    that turn's answer (A's and B's for a pairwise prompt) in the graded position."""
    try:
        template = expand_template(prompt.prompt_template, turn)
    except TemplateError as e:
        raise QuartetError(f"{where} {prompt.name!r} cannot express turn {turn}: {e}") from None
    used = fields(template)
    graded = ["answer_a", "answer_b"] if prompt.type == "pairwise" else ["answer"]
    if not (set(graded) <= used or {f"{g}_{turn}" for g in graded} <= used):
        raise QuartetError(
            f"{where} {prompt.name!r} cannot express turn {turn}: it shows no {{{graded[0]}}} or "
            f"{{{graded[0]}_{turn}}}, so the answer of turn {turn} would not be graded"
        )
    return template


def _render(
    prompt: JudgePrompt,
    questions: Sequence[str],
    answers: Mapping[str, Sequence[str]],
    turn: int,
    references: Sequence[str] | None,
) -> list[dict[str, str]]:
    if not 1 <= turn <= min(len(questions), *(len(a) for a in answers.values())):
        raise ValueError(f"turn {turn} is outside the answered turns")
    template = turn_template(prompt, turn)
    values = _values(questions, answers, turn, references)
    missing = fields(template) - set(values)
    if missing:
        raise QuartetError(
            f"judge prompt {prompt.name!r} uses {sorted(missing)}, which turn {turn} does not have "
            "(an empty or missing reference answer is never filled in)"
        )
    system = prompt.system_prompt
    if template != prompt.prompt_template:
        system = focus_ordinal(system, turn)
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": template.format(**values)}]


def judge_messages(
    prompt: JudgePrompt,
    questions: Sequence[str],
    answers: Sequence[str],
    turn: int,
    references: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """The chat messages that ask the judge to grade ``answers[turn-1]`` (``turn`` counted from 1)."""
    return _render(prompt, questions, {"": answers}, turn, references)


def pair_messages(
    prompt: JudgePrompt,
    questions: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    turn: int,
    references: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """The chat messages that ask the judge to compare turn ``turn`` of A's and B's conversations."""
    return _render(prompt, questions, {"_a": answers_a, "_b": answers_b}, turn, references)


def check_prompts(
    prompts: Mapping[str, JudgePrompt], needed: Sequence[tuple[str, int]], source: str | None
) -> None:
    """One error for the first (prompt name, turn) the run needs that ``prompts`` cannot express, before
    anything is generated: a missing name, or a template that cannot show that turn's answer."""
    where = f"task.judge_prompts={source}" if source else "Quartet's judge prompts"
    for name, turn in needed:
        if name not in prompts:
            raise QuartetError(f"{where} has no prompt named {name!r}, needed for turn {turn}")
        turn_template(prompts[name], turn, f"{where}: prompt")
