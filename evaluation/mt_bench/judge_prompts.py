"""Single-answer judge prompts for multi-turn MT-Bench grading (FastChat's ``[[rating]]`` style).

Quartet's own prompts (written here) show the judge the whole dialogue so far, the turn to grade and,
for math, reasoning and coding, the reference answer of that turn; the judge ends with ``[[rating]]``,
1-10. A user may pass their own FastChat ``judge_prompts.jsonl`` (``{"name", "type": "single",
"system_prompt", "prompt_template", "output_format"}``): its templates may use ``{question}``,
``{answer}``, ``{ref_answer}`` and ``{history}`` for the graded turn, and FastChat's numbered fields
``{question_i}``, ``{answer_i}``, ``{ref_answer_i}`` (i counted from 1) for any turn up to it.
Prompts are chosen by name as FastChat names them: ``single-v1`` / ``single-math-v1`` for the first turn,
``single-v1-multi-turn`` / ``single-math-v1-multi-turn`` for later ones (the ``math`` ones for the
reference categories).
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evaluation.mt_bench.temperatures import REFERENCE_CATEGORIES
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


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    system_prompt: str
    prompt_template: str

    def fields(self) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self.prompt_template) if f}


BUILTIN: dict[str, JudgePrompt] = {
    "single-v1": JudgePrompt("quartet-single-v1", _SYSTEM, _GENERAL),
    "single-math-v1": JudgePrompt("quartet-single-math-v1", _SYSTEM, _WITH_REFERENCE),
    "single-v1-multi-turn": JudgePrompt("quartet-single-v1-multi-turn", _SYSTEM, _GENERAL),
    "single-math-v1-multi-turn": JudgePrompt("quartet-single-math-v1-multi-turn", _SYSTEM, _WITH_REFERENCE),
}


def load_judge_prompts(path: str | Path | None) -> dict[str, JudgePrompt]:
    """The built-in prompts, overridden by the single-answer prompts of a FastChat judge_prompts.jsonl."""
    prompts = dict(BUILTIN)
    if path is None:
        return prompts
    p = Path(path)
    if not p.is_file():
        raise QuartetError(f"task.judge_prompts={p}: no such file")
    for n, line in iter_lines(p):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if row.get("type", "single") != "single":
                continue
            prompts[row["name"]] = JudgePrompt(
                row["name"], row.get("system_prompt", ""), row["prompt_template"]
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise QuartetError(f"{p}:{n}: not a FastChat judge prompt ({type(e).__name__}: {e})") from None
    return prompts


def prompt_name(category: str, turn: int) -> str:
    """FastChat's prompt name for a category and a turn (counted from 1)."""
    base = "single-math-v1" if category in REFERENCE_CATEGORIES else "single-v1"
    return base if turn == 1 else f"{base}-multi-turn"


def format_history(questions: Sequence[str], answers: Sequence[str]) -> str:
    if not questions:
        return "(none: this is the first message)"
    return "\n\n".join(f"User: {q}\n\nAssistant: {a}" for q, a in zip(questions, answers))


def judge_messages(
    prompt: JudgePrompt,
    questions: Sequence[str],
    answers: Sequence[str],
    turn: int,
    references: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """The chat messages that ask the judge to grade ``answers[turn-1]`` (``turn`` counted from 1)."""
    if not 1 <= turn <= min(len(questions), len(answers)):
        raise ValueError(f"turn {turn} is outside the {len(answers)} answered turns")
    i = turn - 1
    values = {
        "history": format_history(questions[:i], answers[:i]),
        "question": questions[i],
        "answer": answers[i],
        "ref_answer": references[i] if references and i < len(references) else "",
    }
    for k in range(turn):
        values[f"question_{k + 1}"] = questions[k]
        values[f"answer_{k + 1}"] = answers[k]
        values[f"ref_answer_{k + 1}"] = references[k] if references and k < len(references) else ""
    missing = prompt.fields() - set(values)
    if missing:
        raise QuartetError(
            f"judge prompt {prompt.name!r} uses {sorted(missing)}, which turn {turn} does not have "
            "(fields: question, answer, ref_answer, history, and question_i/answer_i/ref_answer_i up to the turn)"
        )
    messages = [{"role": "system", "content": prompt.system_prompt}] if prompt.system_prompt else []
    return [*messages, {"role": "user", "content": prompt.prompt_template.format(**values)}]
