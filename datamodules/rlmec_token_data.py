"""RLMECDataModule: the RL data of RLMEC (METHODS.md §3, step 6) -> batches for ``RLMECModule``.

The data is JSONL written in token ids of the policy tokenizer, so every per-token field is aligned
to the policy's tokens by construction. One record per policy sample:

- ``prompt_ids`` (list[int], non-empty): the prompt x, chat template included;
- ``response_ids`` (list[int], non-empty): the original solution y;
- ``rewards`` (list[float], one per ``response_ids`` token): the GRM token rewards r_t;
- ``ref_logps`` (list[float], one per ``response_ids`` token): log π_ref(y_t | x, y_<t);
- ``rewrite_ids`` (list[int], may be empty: no imitation target): the rewrite ŷ;
- ``weights`` (list[float], one per ``rewrite_ids`` token): the imitation weights ω_j;
- ``correct`` (bool): whether y's answer is right;
- optional ``problem_id`` (the validation split keeps a problem's samples together) and ``id``.

A record that breaks these rules stops loading with one line naming ``file:line`` and the field.

:class:`RLMECCollator` stacks originals and rewrites into ONE batch of 2B rows (originals first, then
rewrites, right padding), so the policy runs one forward per step. ``labels`` is -100 exactly on the
prompt and padding (the response mask is built from the lengths, not guessed from token values).
Per-token fields are laid out on the same [B, T] grid as ``input_ids``, at the positions of the tokens
they belong to: ``rewards``/``ref_logps`` on the original rows, ``weights`` on the rewrite rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from algorithms.logprobs import IGNORE_INDEX
from algorithms.rlmec_records import ALIGNED_FIELDS, ID_FIELDS, REQUIRED
from datamodules.base import TokenDataModule, split_indices
from models import load_tokenizer
from utils.errors import ConfigError, DataError
from utils.record_files import Record, read_records

log = logging.getLogger(__name__)


def _int_list(value: Any, name: str, where: str, vocab: int | None) -> list[int]:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise DataError(f"{where}: field {name!r} must be a list of token ids (integers)")
    if vocab is not None and any(not 0 <= v < vocab for v in value):
        bad = next(v for v in value if not 0 <= v < vocab)
        raise DataError(
            f"{where}: field {name!r} has token id {bad}, outside the tokenizer's vocabulary of {vocab} "
            "(was the data made with another tokenizer?)"
        )
    return value


def _float_list(value: Any, name: str, where: str) -> list[float]:
    if not isinstance(value, list) or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) for v in value
    ):
        raise DataError(f"{where}: field {name!r} must be a list of numbers")
    out = [float(v) for v in value]
    if not all(math.isfinite(v) for v in out):
        raise DataError(f"{where}: field {name!r} has a non-finite value")
    return out


def validate_record(data: Mapping[str, Any], where: str, vocab: int | None = None) -> dict[str, Any]:
    """One RL record, checked and normalised (see the module docstring); ``where`` is ``file:line``."""
    if not isinstance(data, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(map(repr, missing))} (keys: {sorted(data)})")
    out: dict[str, Any] = {k: _int_list(data[k], k, where, vocab) for k in ID_FIELDS}
    for name in ("prompt_ids", "response_ids"):
        if not out[name]:
            raise DataError(f"{where}: field {name!r} is empty")
    for name, tokens in ALIGNED_FIELDS.items():
        out[name] = _float_list(data[name], name, where)
        if len(out[name]) != len(out[tokens]):
            raise DataError(
                f"{where}: field {name!r} has {len(out[name])} values but {tokens!r} has "
                f"{len(out[tokens])} tokens (one value per token)"
            )
    if not isinstance(data["correct"], bool):
        raise DataError(f"{where}: field 'correct' must be true or false, got {data['correct']!r}")
    out["correct"] = data["correct"]
    out["problem_id"] = str(data.get("problem_id", data.get("id", where)))
    return out


def truncate_record(rec: dict[str, Any], max_length: int, where: str, truncation: str) -> dict[str, Any]:
    """Cut the response and the rewrite (with their per-token fields) to fit ``max_length``."""
    room = max_length - len(rec["prompt_ids"])
    longest = max(len(rec["response_ids"]), len(rec["rewrite_ids"]))
    if longest <= room:
        return rec
    if truncation == "error" or room < 1:
        raise DataError(
            f"{where}: {len(rec['prompt_ids'])} prompt + {longest} response tokens exceed "
            f"data.max_length={max_length}"
            + (" (raise it, or set data.truncation=right)" if room >= 1 else "")
        )
    out = dict(rec)
    for name in ("response_ids", "rewards", "ref_logps", "rewrite_ids", "weights"):
        out[name] = rec[name][:room]
    return out


class RLMECCollator:
    """Pad RL records into one batch of 2B rows (originals, then rewrites).

    Output: ``input_ids``/``attention_mask``/``labels`` [2B, T] (labels -100 off the responses),
    ``rewards``/``ref_logps`` [B, T] (float32, 0 off the original responses), ``weights`` [B, T]
    (float32, 0 off the rewrites) and ``correct`` [B] (bool). Position t of a per-token field holds the
    value for token ``input_ids[:, t]``.
    """

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None):
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [(f["prompt_ids"], f["response_ids"]) for f in features]
        rows += [(f["prompt_ids"], f["rewrite_ids"]) for f in features]
        longest = max(len(p) + len(r) for p, r in rows)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        n, b = len(rows), len(features)
        input_ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        for i, (p, r) in enumerate(rows):
            input_ids[i, : len(p) + len(r)] = torch.as_tensor(p + r, dtype=torch.long)
            labels[i, len(p) : len(p) + len(r)] = torch.as_tensor(r, dtype=torch.long)
            attention[i, : len(p) + len(r)] = 1
        grids = {k: torch.zeros((b, longest), dtype=torch.float32) for k in ALIGNED_FIELDS}
        for i, f in enumerate(features):
            start = len(f["prompt_ids"])
            for k in ALIGNED_FIELDS:
                grids[k][i, start : start + len(f[k])] = torch.as_tensor(f[k], dtype=torch.float32)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            **grids,
            "correct": torch.as_tensor([bool(f["correct"]) for f in features], dtype=torch.bool),
        }


class RLMECDataModule(TokenDataModule):
    """RL records (see the module docstring) for ``RLMECModule``; validation by ``val_path`` or by a
    seeded ``val_fraction`` of the problems (a problem's samples stay on one side).

    ``cache_dir`` is accepted for the data keys every data config shares (``debug=smoke`` sets it) and
    has nothing to cache: the records hold token ids already, read in one pass."""

    batch_kind: ClassVar[str] = "rlmec"  # utils.batch_kinds

    def __init__(
        self,
        path: str,
        tokenizer: str,
        val_path: str | None = None,
        val_fraction: float = 0.0,
        max_length: int = 1024,
        truncation: str = "right",
        pad_to_multiple_of: int | None = None,
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        **loader_kwargs: Any,
    ):
        super().__init__(**loader_kwargs)
        del cache_dir  # nothing to cache (see the class docstring)
        problems = []
        if truncation not in ("right", "error"):
            problems.append(f"data.truncation={truncation!r} must be 'right' (cut responses) or 'error'")
        if not isinstance(max_length, int) or max_length < 2:
            problems.append(f"data.max_length={max_length} must be an integer >= 2")
        if not 0 <= val_fraction < 1:
            problems.append(f"data.val_fraction={val_fraction} must be in [0, 1)")
        if problems:
            raise ConfigError(problems)
        self.path, self.val_path, self.val_fraction = path, val_path, val_fraction
        self.tokenizer_name, self.trust_remote_code = tokenizer, trust_remote_code
        self.max_length, self.truncation, self.pad_to_multiple_of = max_length, truncation, pad_to_multiple_of
        self.tokenizer: Any = None

    def example_lengths(self, dataset: list[dict[str, Any]]) -> list[list[int]]:
        """Each record adds two rows: prompt + original response, prompt + rewrite."""
        return [
            [len(r["prompt_ids"]) + len(r["response_ids"]), len(r["prompt_ids"]) + len(r["rewrite_ids"])]
            for r in dataset
        ]

    def load(self, path: str) -> list[dict[str, Any]]:
        """Read and validate every record of ``path`` (stops at the first bad one)."""
        vocab = len(self.tokenizer)
        out = []
        for rec in read_records(path):
            out.append(self._one(rec, vocab))
        if not out:
            raise DataError(f"{path}: no RL records found")
        return out

    def _one(self, rec: Record, vocab: int) -> dict[str, Any]:
        checked = validate_record(rec.data, rec.location, vocab)
        return truncate_record(checked, self.max_length, rec.location, self.truncation)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.tokenizer_name, self.trust_remote_code)
        train = self.load(self.path)
        if self.val_path:
            self.train_dataset, self.val_dataset = train, self.load(self.val_path)
        else:
            groups = sorted({r["problem_id"] for r in train})
            tr, va = split_indices(len(groups), self.val_fraction, self.seed)
            val_groups = {groups[i] for i in va}
            self.train_dataset = [r for r in train if r["problem_id"] not in val_groups]
            self.val_dataset = [r for r in train if r["problem_id"] in val_groups]
        self.collate = RLMECCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of)
        log.info("RLMEC data: %d train, %d val samples", len(self.train_dataset), len(self.val_dataset or []))
