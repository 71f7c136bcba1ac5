"""MATH-style answers: ``\\boxed{}`` extraction and symbolic equivalence through ``math-verify``.

The MATH benchmark (Hendrycks et al., 2021) puts the final answer of every solution in ``\\boxed{}``,
and the RLMEC paper (arXiv 2401.06081) scores MATH and MMLU-Math by answer match. A string comparison
gets many right answers wrong (``\\dfrac{1}{2}`` against ``\\frac12``, ``\\boxed{0.5}`` against ``\\frac{1}{2}``,
``x^2+1`` against ``1+x^2``), so extraction and comparison go through Hugging Face's ``math-verify``
(pinned in requirements.txt), which parses LaTeX into sympy and compares the expressions.

- :func:`extract_math` reads the answer a model gave: ``strict`` only an anchored one (``\\boxed{}``,
  ``The final answer is ...``), ``flexible`` also the last expression anywhere, ``auto`` strict first;
- :func:`normalize_math` reads a gold answer (a bare answer, or a solution ending in ``\\boxed{}``);
- :func:`math_equal` is the comparison.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

_SPACES = re.compile(r"\s+")


def _timeout() -> int | None:
    """math-verify's timeouts use ``signal.alarm``, which only the main thread may set."""
    return 5 if threading.current_thread() is threading.main_thread() else None


def _configs(anchored_only: bool) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    free = not anchored_only
    return [
        LatexExtractionConfig(try_extract_without_anchor=free, boxed_match_priority=0),
        ExprExtractionConfig(try_extract_without_anchor=free),
    ]


def _parse(text: str, anchored_only: bool = False) -> list[Any]:
    from math_verify import parse

    return parse(text, extraction_config=_configs(anchored_only), parsing_timeout=_timeout())


def _as_string(parsed: list[Any]) -> str | None:
    """The extracted LaTeX string math-verify returns beside the sympy value (None when nothing parsed)."""
    strings = [p for p in parsed if isinstance(p, str) and p.strip()]
    return _SPACES.sub(" ", strings[-1]).strip() if strings else None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def extract_math(text: str, mode: str = "auto") -> str | None:
    """The final mathematical answer in a model's output, as LaTeX, or None (a parse failure)."""
    if mode not in ("strict", "flexible", "auto"):
        raise ValueError(f"Unknown extraction mode {mode!r}; choose one of ['strict', 'flexible', 'auto']")
    if mode in ("strict", "auto"):
        boxed = last_boxed(text)
        if boxed:
            return normalize_math(boxed)
        found = _as_string(_parse(text, anchored_only=True))
        if found is not None or mode == "strict":
            return found
    return _as_string(_parse(text))


def normalize_math(value: str) -> str | None:
    """A gold answer as LaTeX: the last ``\\boxed{}`` of a solution, else the value without ``$``."""
    value = str(value)
    boxed = last_boxed(value)
    out = boxed if boxed is not None else value.strip().strip("$").strip()
    out = _SPACES.sub(" ", out).strip()
    return out or None


def _plain(latex: str) -> str:
    """A last-resort string form: no spaces, ``\\dfrac``/``\\tfrac`` as ``\\frac``, no ``\\left``/``\\right``."""
    s = re.sub(r"\\[dt]frac", r"\\frac", latex)
    s = re.sub(r"\\left|\\right|\\!|\\,|\\;|\s", "", s)
    return s.strip("$.")


@lru_cache(maxsize=65536)
def _parsed(latex: str) -> tuple[Any, ...]:
    return tuple(_parse(f"${latex}$"))


def math_equal(pred: str, gold: str) -> bool:
    """``pred`` and ``gold`` (LaTeX answers) are the same mathematical object, by ``math_verify.verify``;
    when either side does not parse, their plain string forms are compared."""
    from math_verify import verify

    if _plain(pred) == _plain(gold):
        return True
    p, g = _parsed(pred), _parsed(gold)
    if not p or not g:
        return False
    return bool(verify(list(g), list(p), timeout_seconds=_timeout()))
