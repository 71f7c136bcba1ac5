"""ChatDataModule: multi-turn chat files -> token batches with role-based loss masks.

Used by chat SFT (``loss_roles: [assistant]``) and the Parrot Ask model (``loss_roles: [user]``).
Records are read and validated (``utils/record_files.py``, ``datamodules/chat_format.py``), then
tokenised once with ``datasets.map`` into an Arrow cache keyed by the file, the tokenizer and every
masking setting, so a large file is not re-tokenised on every run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import datasets

from datamodules.base import TokenDataModule, cached_map, fingerprint, split_indices
from datamodules.chat_format import ROLES, normalise_messages
from datamodules.chat_masks import MaskPolicy, tokenize_chat
from datamodules.collate import PadCollator
from models.tokenizer import load_tokenizer
from utils.errors import ConfigError, DataError
from utils.record_files import Record, read_records

log = logging.getLogger(__name__)


class ChatDataModule(TokenDataModule):
    batch_kind: ClassVar[str] = "tokens"  # utils.batch_kinds (data=chat, ask, reasoning_sft)

    def __init__(
        self,
        path: str,
        tokenizer: str,
        loss_roles: list[str] | tuple[str, ...] = ("assistant",),
        turns: str = "all",
        include_first_user: bool = True,
        max_length: int = 512,
        truncation: str = "right",
        on_empty_mask: str = "error",
        val_path: str | None = None,
        val_fraction: float = 0.05,
        split: str = "train",
        cache_dir: str | None = None,
        num_proc: int | None = None,
        pad_to_multiple_of: int | None = None,
        trust_remote_code: bool = False,
        chat_template: str | None = None,
        **loader_kwargs: Any,
    ):
        super().__init__(**loader_kwargs)
        problems = []
        if not set(loss_roles) <= set(ROLES) or not loss_roles:
            problems.append(f"data.loss_roles={list(loss_roles)} must be a non-empty subset of {list(ROLES)}")
        if turns not in ("all", "last"):
            problems.append(f"data.turns={turns!r} must be 'all' or 'last'")
        if truncation not in ("right", "left", "drop", "error"):
            problems.append(f"data.truncation={truncation!r} must be right, left, drop or error")
        if on_empty_mask not in ("error", "skip"):
            problems.append(f"data.on_empty_mask={on_empty_mask!r} must be 'error' or 'skip'")
        if max_length < 2:
            problems.append(f"data.max_length={max_length} must be at least 2")
        if not 0 <= val_fraction < 1:
            problems.append(f"data.val_fraction={val_fraction} must be in [0, 1)")
        if problems:
            raise ConfigError(problems)
        self.path, self.val_path, self.split = path, val_path, split
        self.tokenizer_name, self.trust_remote_code = tokenizer, trust_remote_code
        self.chat_template = chat_template  # model.chat_template: overrides the tokenizer's own
        self.policy = MaskPolicy(tuple(loss_roles), turns, include_first_user)  # type: ignore[arg-type]
        self.max_length, self.truncation, self.on_empty_mask = max_length, truncation, on_empty_mask
        self.val_fraction, self.cache_dir, self.num_proc = val_fraction, cache_dir, num_proc
        self.pad_to_multiple_of = pad_to_multiple_of
        self.tokenizer: Any = None
        self.skipped = 0

    def prepare_data(self) -> None:
        # Runs on one process per node first, so the Arrow cache is written once.
        self._tokenized(self.path)
        if self.val_path:
            self._tokenized(self.val_path)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        train = self._tokenized(self.path)
        if self.val_path:
            self.train_dataset, self.val_dataset = train, self._tokenized(self.val_path)
        else:
            tr, va = split_indices(len(train), self.val_fraction, self.seed)
            self.train_dataset, self.val_dataset = train.select(tr), train.select(va)
        self.collate = PadCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of)

    def example_lengths(self, dataset: datasets.Dataset) -> list[list[int]]:
        """Each conversation is one row."""
        return [[len(ids)] for ids in dataset.select_columns(["input_ids"]).to_dict()["input_ids"]]

    def to_messages(self, record: Record) -> list[dict[str, str]]:
        """One record as chat messages. Subclasses override this to train on other record formats
        (e.g. reasoning ``{"question", "answer"}`` pairs rendered with the evaluation prompt)."""
        return normalise_messages(record)

    def cache_key_parts(self) -> list:
        """Settings of a subclass that change ``to_messages``' output, so they key the token cache."""
        return []

    def _tokenized(self, path: str) -> datasets.Dataset:
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.tokenizer_name, self.trust_remote_code, self.chat_template)
        records = read_records(path, split=self.split)
        conversations = [self.to_messages(r) for r in records]
        raw = datasets.Dataset.from_dict(
            {"messages": conversations, "location": [r.location for r in records]}
        )
        key = fingerprint(
            type(self).__qualname__,
            self.cache_key_parts(),
            self.tokenizer_name,
            self.tokenizer.chat_template,
            len(self.tokenizer),
            list(self.policy.loss_roles),
            self.policy.turns,
            self.policy.include_first_user,
            self.max_length,
            self.truncation,
            self.on_empty_mask,
            self.split,
            files=[path],
        )
        tokenizer, policy, max_length = self.tokenizer, self.policy, self.max_length
        truncation, skip = self.truncation, self.on_empty_mask == "skip"

        def encode(batch: dict[str, list]) -> dict[str, list]:
            out: dict[str, list] = {"input_ids": [], "labels": []}
            for messages, location in zip(batch["messages"], batch["location"]):
                try:
                    enc = tokenize_chat(tokenizer, messages, policy, max_length, truncation, location)
                except DataError:
                    if not skip:
                        raise
                    enc = None
                if enc is not None:
                    out["input_ids"].append(enc["input_ids"])
                    out["labels"].append(enc["labels"])
            return out

        ds = cached_map(
            raw, encode, key, self.cache_dir, "chat", f"Tokenizing {Path(path).name}", self.num_proc
        )
        dropped = len(raw) - len(ds)
        if dropped:
            self.skipped += dropped
            log.warning(
                "%s: skipped %d of %d conversations (empty loss mask or too long)", path, dropped, len(raw)
            )
        if len(ds) == 0:
            raise DataError(f"{path}: no conversation left to train on after masking and truncation")
        return ds
