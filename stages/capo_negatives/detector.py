"""Which user turns depend on the conversation before them (METHODS.md §1: CaPO's negatives go to
context-dependent queries).

A cheap heuristic flags a user turn that has history and shows an anaphora or ellipsis cue:
- a pronoun or pro-form pointing back ("it", "that", "they", "there", "the first one", "the other");
- a definite reference to earlier output ("the result", "the above", "the list");
- an elliptical fragment ("And in Brazil?", "What about the second?", "Now double that.", "Why?").

Optionally a judge model confirms each flagged turn (``confirm_with_judge``): it sees the history and
the question and answers yes/no to "does this question need the earlier conversation?". The judge is
the shared :class:`evaluation.judges.YesNoJudge`; a reply that says neither yes nor no is a failure
(None), never a "no".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from evaluation.judges import YesNoJudge, parse_yes_no
from stages.common import ChatGenerator, Message

PRONOUNS = (
    "it", "its", "itself", "that", "this", "these", "those", "they", "them", "their", "theirs",
    "there", "he", "him", "his", "she", "her", "hers", "such",
)  # fmt: skip
ORDINALS = "first|second|third|fourth|fifth|last|other|former|latter|previous|next|same|above"
REFERENCE = re.compile(rf"\b(?:the\s+(?:{ORDINALS})(?:\s+ones?)?|which\s+ones?|the\s+other\s+ones?)\b", re.I)
EARLIER_OUTPUT = re.compile(
    r"\b(?:the|your)\s+(?:result|answer|list|code|text|story|example|sentence|number|output|"
    r"summary|translation|poem|one\s+above|previous\s+\w+|last\s+\w+)\b",
    re.I,
)
ELLIPSIS_START = re.compile(r"^\s*(?:and|but|or|also|then|now|next)\b", re.I)
WHAT_ABOUT = re.compile(r"^\s*(?:what|how)\s+about\b", re.I)
TRAILING_PROFORM = re.compile(r"\b(?:again|too|instead|as\s+well|more|else)\s*[?.!]*\s*$", re.I)
WORD = re.compile(r"[A-Za-z']+")
SHORT_FRAGMENT_WORDS = 3


# "that" introducing a clause ("a function that sorts", "I think that ...") and existential "there"
# ("is there a way", "there are two") are not anaphora.
THAT_POINTS_BACK_AFTER = {
    "is", "was", "does", "did", "do", "about", "of", "like", "with", "for", "to", "than", "and", "but",
    "explain", "make", "change", "translate", "rewrite", "repeat", "try", "use", "fix", "mean", "means",
}  # fmt: skip
EXISTENTIAL = {"is", "are", "was", "were", "be", "been", "exist", "exists", "s"}


def _pronoun(words: list[str], i: int) -> bool:
    w = words[i]
    if w not in PRONOUNS:
        return False
    prev = words[i - 1] if i > 0 else ""
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if w == "that":
        return (
            i == len(words) - 1 or prev in THAT_POINTS_BACK_AFTER or nxt in ("is", "was", "one", "ones", "s")
        )
    if w == "there":
        return nxt not in EXISTENTIAL and prev not in EXISTENTIAL
    return True


@dataclass(frozen=True)
class Detection:
    dependent: bool
    cues: tuple[str, ...]


def detect(query: str, has_history: bool = True) -> Detection:
    """Flag ``query`` as context-dependent when it has history and at least one cue. ``cues`` names
    every cue found (e.g. ``pronoun:it``, ``ellipsis:and``, ``reference:the first one``)."""
    cues: list[str] = []
    words = [w.lower() for w in WORD.findall(query)]
    cues += [f"pronoun:{w}" for w in dict.fromkeys(w for i, w in enumerate(words) if _pronoun(words, i))]
    cues += [f"reference:{m.group(0).lower()}" for m in REFERENCE.finditer(query)]
    cues += [f"reference:{m.group(0).lower()}" for m in EARLIER_OUTPUT.finditer(query)]
    if m := ELLIPSIS_START.match(query):
        cues.append(f"ellipsis:{m.group(0).strip().lower()}")
    if WHAT_ABOUT.match(query):
        cues.append("ellipsis:what-about")
    if m := TRAILING_PROFORM.search(query):
        cues.append(f"ellipsis:{m.group(0).strip(' ?.!').lower()}")
    if 0 < len(words) <= SHORT_FRAGMENT_WORDS and query.strip().endswith("?"):
        cues.append("ellipsis:short-question")
    cues = list(dict.fromkeys(cues))
    return Detection(dependent=has_history and bool(cues), cues=tuple(cues))


JUDGE_PROMPT = (
    "Here is the start of a conversation between a user and an assistant:\n\n{history}\n\n"
    "The user's next message is:\n\n{question}\n\n"
    "Does this message depend on the conversation above to be understood, for example because it uses "
    "'it', 'that' or 'the first one' for something said earlier, or leaves out words that only the "
    "conversation supplies? Answer yes or no."
)


def format_history(history: list[Message], max_chars: int = 4000) -> str:
    """The history as ``User: ...`` / ``Assistant: ...`` lines, keeping the most recent ``max_chars``."""
    text = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in history)
    return text if len(text) <= max_chars else "..." + text[-max_chars:]


def judge_prompt(history: list[Message], question: str, template: str = JUDGE_PROMPT) -> list[Message]:
    return [{"role": "user", "content": template.format(history=format_history(history), question=question)}]


def parse_verdict(reply: str) -> bool | None:
    """The judge's verdict: True = depends on the context (yes), False = stands alone (no), None =
    unparseable (:func:`evaluation.judges.parse_yes_no`)."""
    return parse_yes_no(reply)


def confirm_with_judge(
    judge: YesNoJudge | ChatGenerator, items: list[tuple[list[Message], str]], template: str = JUDGE_PROMPT
) -> list[bool | None]:
    """Ask the judge about each ``(history, question)``: True where it confirms context dependence,
    False where it says the question stands alone, None where its reply is unparseable (counted in
    ``judge.counts["unparseable"]``). A plain generator function is wrapped in a ``YesNoJudge``."""
    if not isinstance(judge, YesNoJudge):
        judge = YesNoJudge(judge)
    verdicts = judge([judge_prompt(h, q, template) for h, q in items])
    return [None if v.value is None else bool(v.value) for v in verdicts]
