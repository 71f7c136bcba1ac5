"""Prompt templates for chain-of-thought questions and the Self-Agreement selection step.

The scenario grid of Self-Agreement (arXiv 2311.08154) is exposed as two switches:

- ``question_type_known``: the prompt names the task (``task_descriptions``) and few-shot exemplars
  come from the same task; when unknown, no task description is given and exemplars are drawn from
  the whole (mixed-task) pool;
- ``answer_format_known``: the prompt carries an instruction for the expected answer format
  (``format_instructions[answer_type]``); when unknown, only the generic instruction is used.

Every template is a plain ``str.format`` string so it can live in a config file. The agreement prompt
wording is not given by the paper; :data:`AGREEMENT_TEMPLATE` is this project's default.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from inference.backends.base import Prompt
from inference.chat import user_messages
from reasoning.answers import choice_letters
from reasoning.questions import ReasoningRecord

GENERIC_INSTRUCTION = "Answer the following question. Think step by step."

FORMAT_INSTRUCTIONS: dict[str, str] = {
    "number": 'Think step by step, then finish with "The answer is N." where N is a number.',
    "choice": 'Think step by step, then finish with "The answer is (X)." where X is one of {letters}.',
    "yesno": 'Think step by step, then finish with "The answer is yes." or "The answer is no."',
    "text": 'Think step by step, then finish with "The answer is X." where X is a short phrase.',
    "math": "Think step by step, then put the final answer in LaTeX inside \\boxed{{}}.",
}

#: How an exemplar's final answer is written, per answer type.
ANSWER_ENDINGS: dict[str, str] = {
    "number": "The answer is {gold}.",
    "choice": "The answer is ({gold}).",
    "yesno": "The answer is {gold}.",
    "text": "The answer is {gold}.",
    "math": "The answer is $\\boxed{{{gold}}}$.",
}

AGREEMENT_TEMPLATE = (
    "{question}\n\n"
    "Here are {m} candidate solutions to this question:\n\n"
    "{paths}\n\n"
    "Which final answer do most of the candidate solutions agree on?{format_instruction}"
)
AGREEMENT_PATH_TEMPLATE = "Solution {i}: {path}"
AGREEMENT_FORMAT_INSTRUCTIONS: dict[str, str] = {
    "number": ' Reply with "The answer is N." where N is that number.',
    "choice": ' Reply with "The answer is (X)." where X is one of {letters}.',
    "yesno": ' Reply with "The answer is yes." or "The answer is no."',
    "text": ' Reply with "The answer is X."',
    "math": " Reply with that answer in LaTeX inside \\boxed{{}}.",
}


@dataclass
class PromptSettings:
    """Everything that shapes prompt text; recorded with results.

    Attributes:
        chat: send chat messages (the model's chat template is applied) instead of raw text.
        system_prompt: optional system message in chat mode.
        question_type_known / answer_format_known: the scenario grid (see module docstring).
        num_fewshot: exemplars per prompt, taken from the few-shot pool given to :func:`build_cot_prompt`.
        fewshot_seed: seeds the exemplar choice (fixed per question id).
        raw_answer_cue: appended to raw prompts so the model continues with the answer.
        stop: stop strings for the CoT and agreement calls; ``None`` means the default
            ``["\nQuestion:"]``, which ends a completion where the model starts inventing the next
            question (generation also ends at EOS / end of turn).
    """

    chat: bool = True
    system_prompt: str | None = None
    question_type_known: bool = True
    answer_format_known: bool = True
    num_fewshot: int = 0
    fewshot_seed: int = 1234
    generic_instruction: str = GENERIC_INSTRUCTION
    format_instructions: dict[str, str] = field(default_factory=lambda: dict(FORMAT_INSTRUCTIONS))
    task_descriptions: dict[str, str] = field(default_factory=dict)
    answer_endings: dict[str, str] = field(default_factory=lambda: dict(ANSWER_ENDINGS))
    agreement_template: str = AGREEMENT_TEMPLATE
    agreement_path_template: str = AGREEMENT_PATH_TEMPLATE
    agreement_format_instructions: dict[str, str] = field(
        default_factory=lambda: dict(AGREEMENT_FORMAT_INSTRUCTIONS)
    )
    raw_answer_cue: str = "\nAnswer:"
    stop: list[str] | None = None

    def __post_init__(self) -> None:
        if self.num_fewshot < 0:
            raise ValueError(f"num_fewshot must be >= 0, got {self.num_fewshot}")
        for name in ("{question}", "{paths}"):
            if name not in self.agreement_template:
                raise ValueError(f"agreement_template must contain the placeholder {name}")

    def stop_strings(self) -> list[str]:
        """The stop strings in force (explicit, or the mode's default)."""
        if self.stop is not None:
            return list(self.stop)
        return ["\nQuestion:"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = self.stop_strings()
        return d


def format_question(record: ReasoningRecord) -> str:
    """The question text, with lettered options for multiple choice."""
    if not record.choices:
        return record.question
    letters = choice_letters(len(record.choices))
    opts = "\n".join(f"({letter}) {text}" for letter, text in zip(letters, record.choices))
    return f"{record.question}\n{opts}"


def _letters_hint(record: ReasoningRecord) -> str:
    return ", ".join(choice_letters(len(record.choices))) if record.choices else ""


def format_solution(record: ReasoningRecord, settings: PromptSettings) -> str:
    """A solved record's answer text: ``<rationale> The answer is X.`` (the ending per answer type).

    Few-shot exemplars and the reasoning-SFT targets (``datamodules/reasoning_sft.py``) both use it, so
    a model fine-tuned on them ends its answers the way the extractor's strict mode reads them.
    """
    ending = settings.answer_endings[record.answer_type].format(gold=record.gold)
    return f"{record.rationale} {ending}".strip() if record.rationale else ending


def format_exemplar(record: ReasoningRecord, settings: PromptSettings) -> str:
    """``Question: ...`` / ``Answer: <rationale> The answer is X.`` block for a solved example."""
    return f"Question: {format_question(record)}\nAnswer: {format_solution(record, settings)}"


def select_exemplars(
    record: ReasoningRecord, pool: Sequence[ReasoningRecord], settings: PromptSettings
) -> list[ReasoningRecord]:
    """Few-shot exemplars for ``record``: same-task ones when the question type is known, else any.

    The choice is seeded by ``(fewshot_seed, record.id)`` so it is stable across runs and batchings,
    and never includes the question itself.
    """
    if settings.num_fewshot == 0:
        return []
    candidates = [r for r in pool if r.id != record.id and r.question != record.question]
    if settings.question_type_known:
        candidates = [r for r in candidates if r.task == record.task]
    if len(candidates) < settings.num_fewshot:
        scope = f"task '{record.task}'" if settings.question_type_known else "the pool"
        raise ValueError(
            f"num_fewshot={settings.num_fewshot} but only {len(candidates)} exemplars are available for "
            f"{scope}; lower num_fewshot or give a larger few-shot pool"
        )
    rng = random.Random(f"{settings.fewshot_seed}:{record.id}")
    return rng.sample(candidates, settings.num_fewshot)


def cot_instruction(record: ReasoningRecord, settings: PromptSettings) -> str:
    """The instruction lines above the question (task description and/or format instruction)."""
    parts = []
    if settings.question_type_known and record.task in settings.task_descriptions:
        parts.append(settings.task_descriptions[record.task])
    if settings.answer_format_known:
        parts.append(settings.format_instructions[record.answer_type].format(letters=_letters_hint(record)))
    else:
        parts.append(settings.generic_instruction)
    return "\n".join(p for p in parts if p)


def build_cot_text(
    record: ReasoningRecord, settings: PromptSettings, pool: Sequence[ReasoningRecord] = ()
) -> str:
    """The chain-of-thought prompt body (before chat templating / the raw answer cue)."""
    blocks = [cot_instruction(record, settings)]
    blocks += [format_exemplar(ex, settings) for ex in select_exemplars(record, pool, settings)]
    blocks.append(f"Question: {format_question(record)}")
    return "\n\n".join(b for b in blocks if b)


def wrap_prompt(body: str, settings: PromptSettings) -> Prompt:
    """Chat messages (chat mode) or raw text ending with the answer cue."""
    if settings.chat:
        return user_messages(body, settings.system_prompt)
    return body + settings.raw_answer_cue


def build_cot_prompt(
    record: ReasoningRecord, settings: PromptSettings, pool: Sequence[ReasoningRecord] = ()
) -> Prompt:
    """The prompt sent for greedy CoT and for sampling reasoning paths."""
    return wrap_prompt(build_cot_text(record, settings, pool), settings)


def build_agreement_text(record: ReasoningRecord, paths: Sequence[str], settings: PromptSettings) -> str:
    """The Self-Agreement selection prompt body: the question plus the m sampled paths.

    The model is asked which answer most paths agree on (arXiv 2311.08154, Sec. 3); the wording comes
    from ``settings.agreement_template`` with placeholders ``{question}``, ``{m}``, ``{paths}`` and
    ``{format_instruction}`` (empty when the answer format is unknown).
    """
    if len(paths) < 1:
        raise ValueError("Self-Agreement needs at least one sampled path (m >= 1)")
    rendered = "\n\n".join(
        settings.agreement_path_template.format(i=i, path=p.strip()) for i, p in enumerate(paths, start=1)
    )
    fmt = ""
    if settings.answer_format_known:
        fmt = settings.agreement_format_instructions[record.answer_type].format(letters=_letters_hint(record))
    return settings.agreement_template.format(
        question=format_question(record), m=len(paths), paths=rendered, format_instruction=fmt
    )


def build_agreement_prompt(record: ReasoningRecord, paths: Sequence[str], settings: PromptSettings) -> Prompt:
    """Agreement prompt, wrapped for chat or raw mode."""
    return wrap_prompt(build_agreement_text(record, paths, settings), settings)
