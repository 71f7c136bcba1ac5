"""Turn k >= 3 in FastChat's two-turn judge templates: repeat the turn-2 block, so the layout stays
FastChat's and the judge sees the whole history with answer k in the graded (last) position.

FastChat's ``*-multi-turn`` templates name the fields of two turns only (``{question_1}``,
``{answer_1}``, ``{question_2}``, ``{answer_2}``, and ``{ref_answer_i}``, ``{answer_a_i}``,
``{answer_b_i}``). Rendering one of them for turn 3 as-is would grade answer 2. The rule here (also in
docs/parrot.md):

- a *run* is a stretch of the template whose numbered fields go ``_1 ... _1`` then ``_2 ... _2`` with
  the same field families in the same order (e.g. ``question, answer`` then ``question, answer``); a
  reference block and a conversation block are two runs;
- for turn k, each run keeps its turn-1 part and its turn-2 part renumbered to ``_2``, and gains
  copies of the turn-2 part renumbered ``_3`` ... ``_k``, each preceded by the text that separates
  the turn-1 part from the turn-2 part in the file (``"\\n\\n### User:\\n"`` in FastChat's layout);
- for k = 2 the template is unchanged, so turns 1 and 2 render exactly as FastChat renders them;
- the system prompt's ordinal of the graded question (the word ``second``) becomes the ordinal of k
  (:func:`focus_ordinal`), so "focus on the answer to the second question" reads "... to the fifth".
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

_NUMBERED = re.compile(r"^(?P<family>.+)_(?P<index>\d+)$")
_SECOND = re.compile(r"\bsecond\b", re.IGNORECASE)
_ORDINALS = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
    "twentieth",
]


class TemplateError(ValueError):
    """The template cannot be repeated for turn k (the message says why)."""


@dataclass(frozen=True)
class _Piece:
    literal: str
    field: str | None
    spec: str = ""
    conversion: str | None = None

    def render(self, index: int | None = None) -> str:
        text = self.literal.replace("{", "{{").replace("}", "}}")
        if self.field is None:
            return text
        name = self.field
        if index is not None and (m := _NUMBERED.match(name)):
            name = f"{m['family']}_{index}"
        conv = f"!{self.conversion}" if self.conversion else ""
        spec = f":{self.spec}" if self.spec else ""
        return text + "{" + name + conv + spec + "}"


def _pieces(template: str) -> list[_Piece]:
    return [
        _Piece(lit, field, spec or "", conv) for lit, field, spec, conv in string.Formatter().parse(template)
    ]


def _index(piece: _Piece) -> int | None:
    if piece.field is None:
        return None
    m = _NUMBERED.match(piece.field)
    return int(m["index"]) if m else None


def _family(piece: _Piece) -> str:
    m = _NUMBERED.match(piece.field or "")
    return m["family"] if m else ""


def _runs(pieces: list[_Piece]) -> list[tuple[int, int, int]]:
    """(first _1 piece, first _2 piece, last _2 piece) of every run, in order."""
    numbered = [(i, _index(p)) for i, p in enumerate(pieces) if _index(p) is not None]
    runs, i = [], 0
    while i < len(numbered):
        start = i
        while i < len(numbered) and numbered[i][1] == 1:
            i += 1
        mid = i
        while i < len(numbered) and numbered[i][1] == 2:
            i += 1
        if mid in (start, i):
            bad = pieces[numbered[start][0]].field
            raise TemplateError(f"field {{{bad}}} is not part of a turn-1 then turn-2 block")
        first = [_family(pieces[j]) for j, _ in numbered[start:mid]]
        second = [_family(pieces[j]) for j, _ in numbered[mid:i]]
        if first != second:
            raise TemplateError(f"its turn-1 fields {first} and turn-2 fields {second} differ")
        runs.append((numbered[start][0], numbered[mid][0], numbered[i - 1][0]))
    return runs


def expand_template(template: str, turn: int) -> str:
    """The template that renders turn ``turn`` (from 2) with the rule above; ``turn`` 2 returns it as
    it is. Raises :class:`TemplateError` when its numbered fields do not form turn-1/turn-2 runs."""
    if turn <= 2:
        return template
    pieces = _pieces(template)
    out: list[str] = []
    pos = 0
    for _first1, first2, last2 in _runs(pieces):
        out += [p.render() for p in pieces[pos:first2]]
        separator = _Piece(pieces[first2].literal, None).render()
        block = [_Piece("", pieces[first2].field, pieces[first2].spec, pieces[first2].conversion)]
        block += pieces[first2 + 1 : last2 + 1]
        for k in range(2, turn + 1):
            out.append(separator)
            out += [p.render(k) for p in block]
        pos = last2 + 1
    out += [p.render() for p in pieces[pos:]]
    return "".join(out)


def focus_ordinal(system_prompt: str, turn: int) -> str:
    """The system prompt with the word ``second`` (the question FastChat's multi-turn prompts focus on)
    replaced by the ordinal of ``turn``; unchanged for turn 2 or a prompt without the word."""
    if turn <= 2:
        return system_prompt
    word = _ORDINALS[turn - 1] if turn <= len(_ORDINALS) else f"{turn}th"

    def same_case(m: re.Match[str]) -> str:
        return word.capitalize() if m.group(0)[0].isupper() else word

    return _SECOND.sub(same_case, system_prompt)


def fields(template: str) -> set[str]:
    """The field names a template uses."""
    return {p.field for p in _pieces(template) if p.field}
