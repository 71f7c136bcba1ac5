"""Per-category answer temperatures, as FastChat's MT-Bench answer generation sets them."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CATEGORY_TEMPERATURE: dict[str, float] = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7
# Categories whose judge prompt carries the reference answer (FastChat grades them against it).
REFERENCE_CATEGORIES = frozenset({"math", "reasoning", "coding"})

_warned: set[str] = set()


def temperature_for(category: str, overrides: dict[str, float] | None = None) -> float:
    """The sampling temperature of ``category`` (``overrides`` first); an unknown category gets
    :data:`DEFAULT_TEMPERATURE`, with one warning per category."""
    table = {**CATEGORY_TEMPERATURE, **(overrides or {})}
    if category in table:
        return float(table[category])
    if category not in _warned:
        _warned.add(category)
        log.warning(
            "mt_bench: unknown category %r: answering with the default temperature %.1f (known: %s)",
            category,
            DEFAULT_TEMPERATURE,
            ", ".join(sorted(table)),
        )
    return DEFAULT_TEMPERATURE
