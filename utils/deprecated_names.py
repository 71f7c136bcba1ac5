"""Config names renamed in this release, kept working for one more with a deprecation line (issue #20).

``method`` (eval.py's greedy / Self-Consistency / Self-Agreement group) is now ``decoding``: in Quartet a
"method" is one of the four papers' methods (CaPO, Self-Agreement, RLMEC, Top-P MoE), while greedy, SC
and SA are ways of decoding and aggregating answers. ``task_name`` (the run's name in its folder path)
is now ``run_name``: a "task" is what ``eval.py`` evaluates (``task=``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

#: old config key or group -> its new name
RENAMED = {"method": "decoding", "task_name": "run_name"}

_OVERRIDE = re.compile(r"^(?P<prefix>[~+]{0,2})(?P<key>[A-Za-z_][\w]*)(?P<rest>[.=@].*)$")


def rewrite_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(args with renamed keys replaced, one deprecation line per renamed key used)``.

    Only the first component of an override is renamed (``method=all``, ``method.ks=[1,3]``,
    ``+method.x=1``); values and other keys are left alone, and flags (``--help``) pass through."""
    out, notes = [], []
    for arg in args:
        m = _OVERRIDE.match(arg)
        if m and m["key"] in RENAMED:
            new = RENAMED[m["key"]]
            out.append(f"{m['prefix']}{new}{m['rest']}")
            note = f"deprecated: '{m['key']}' is now '{new}'; the old name works until the next release"
            if note not in notes:
                notes.append(note)
        else:
            out.append(arg)
    return out, notes


def apply_to_argv() -> None:
    """Rewrite ``sys.argv`` in place before Hydra parses it, printing each deprecation line on stderr."""
    sys.argv[1:], notes = rewrite_overrides(sys.argv[1:])
    for note in notes:
        print(note, file=sys.stderr)
