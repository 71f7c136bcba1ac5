"""The RLMEC token record, defined once: written by the ``rlmec_rl_data`` stage, read by the RLMEC data module.

One JSON object per policy sample, every per-token field in the policy tokenizer's ids (METHODS.md §3):
the sample's tokens with their GRM token rewards r_t and frozen initial-policy log-probs, and the
GRM's minimum-edit rewrite with its imitation weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: token-id fields
ID_FIELDS = ("prompt_ids", "response_ids", "rewrite_ids")
#: per-token float field -> the token field it must match in length
ALIGNED_FIELDS = {"rewards": "response_ids", "ref_logps": "response_ids", "weights": "rewrite_ids"}
#: fields a record must have (``id`` and ``problem_id`` are optional for hand-made data)
REQUIRED = (*ID_FIELDS, *ALIGNED_FIELDS, "correct")


@dataclass(frozen=True)
class RLMECTokenRecord:
    """One RLMEC training record (the stage's output row, the data module's input row)."""

    id: str
    problem_id: str
    correct: bool
    prompt_ids: list[int]
    response_ids: list[int]
    rewards: list[float]
    ref_logps: list[float]
    rewrite_ids: list[int]
    weights: list[float]

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object written to the RL data file."""
        return asdict(self)
