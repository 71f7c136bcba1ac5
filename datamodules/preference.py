"""PreferenceDataModule: preference pairs -> token batches for CaPO / DPO-style training.

Each pair is tokenised once (``datasets.map``, cached in ``cache_dir`` keyed by the file, the
tokenizer and every setting) into three token lists:

- ``prompt_ids``: the **true full context**, rendered with the chat template up to the start of the
  assistant answer (the generation prompt included);
- ``chosen_ids`` / ``rejected_ids``: each answer plus the template's end-of-turn marker.

The split between context and answer is found by rendering prefixes (``chat_masks``): the context is
everything the template renders before the answer's content in ``render(context + [answer])``, so it
works with any prefix-stable chat template and never counts a context token. Responses that do not fit
``max_length`` are cut on the right; the context is never cut.

:class:`PreferenceCollator` pads chosen and rejected and stacks them into ONE batch of 2B rows
(chosen rows first), with ``labels`` = -100 on context and padding, so the policy (and a live
reference) run a single forward per step.

Precomputed reference log-probs are attached as extra dataset columns (``ref_chosen_logps``,
``ref_rejected_logps``) by the training module's pre-pass (see ``set_columns``) and batched by the
collator.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import datasets
import torch

from algorithms.logprobs import IGNORE_INDEX
from datamodules.base import TokenDataModule, cached_map, fingerprint, split_indices
from datamodules.chat_masks import MaskPolicy, trainable_char_spans
from datamodules.preference_format import BAD_REASONS, BadPairError, PreferencePair, normalise_pair
from models.tokenizer import load_tokenizer
from utils.errors import ConfigError, DataError
from utils.record_files import read_records

log = logging.getLogger(__name__)
ANSWER_POLICY = MaskPolicy(loss_roles=("assistant",), turns="last")


def encode_pair(
    tokenizer: Any, pair: PreferencePair, max_length: int, truncation: str = "right"
) -> dict[str, list[int]]:
    """Token ids of one pair: ``prompt_ids``, ``chosen_ids``, ``rejected_ids``.

    Raises ``BadPairError('truncated_to_zero')`` when the context leaves no room for a response token,
    and ``DataError`` for a too-long pair under ``truncation='error'`` or a template that renders the
    context differently before the two answers.
    """
    if pair.context is not None:
        prompt_c, chosen = _split_answer(tokenizer, pair.context, pair.chosen, pair.location)
        prompt_r, rejected = _split_answer(tokenizer, pair.context, pair.rejected, pair.location)
        if prompt_c != prompt_r:
            raise DataError(
                f"{pair.location}: the chat template renders the context differently before the chosen and "
                "the rejected answer, so they can't share one context"
            )
        prompt_ids = tokenizer(prompt_c, add_special_tokens=False)["input_ids"]
        chosen_ids = tokenizer(chosen, add_special_tokens=False)["input_ids"]
        rejected_ids = tokenizer(rejected, add_special_tokens=False)["input_ids"]
    else:  # TRL standard format: raw text, the tokenizer's own special tokens, EOS after each answer
        prompt_ids = tokenizer(pair.prompt_text)["input_ids"]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        chosen_ids = tokenizer(pair.chosen, add_special_tokens=False)["input_ids"] + eos
        rejected_ids = tokenizer(pair.rejected, add_special_tokens=False)["input_ids"] + eos
    if not prompt_ids:
        raise BadPairError(pair.location, "empty_prompt", "it renders to zero tokens")
    room = max_length - len(prompt_ids)
    longest = max(len(chosen_ids), len(rejected_ids))
    if longest > room:
        if truncation == "error":
            raise DataError(
                f"{pair.location}: {len(prompt_ids)} context + {longest} response tokens exceed "
                f"data.max_length={max_length} (raise it, or set data.truncation=right)"
            )
        chosen_ids, rejected_ids = chosen_ids[: max(room, 0)], rejected_ids[: max(room, 0)]
    if not chosen_ids or not rejected_ids:
        raise BadPairError(
            pair.location,
            "truncated_to_zero",
            f"the context alone has {len(prompt_ids)} tokens, data.max_length={max_length}",
        )
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}


def _split_answer(
    tokenizer: Any, context: list[dict[str, str]], answer: str, location: str
) -> tuple[str, str]:
    """``(context text, answer text + end-of-turn)`` from rendering ``context + [answer]``."""
    messages = [*context, {"role": "assistant", "content": answer}]
    full, spans = trainable_char_spans(tokenizer, messages, ANSWER_POLICY, location)
    start, end = spans[-1]
    return full[:start], full[start:end]


class PreferenceCollator:
    """Pad a list of tokenised pairs into one batch of 2B rows: chosen rows, then rejected rows.

    Output: ``input_ids``/``attention_mask``/``labels`` [2B, T] (right padding, ``labels`` -100 on the
    context and padding), ``neg_type`` [B] (indices into ``neg_types``) and, when the pairs carry
    them, ``ref_chosen_logps``/``ref_rejected_logps`` [B] (float32).
    """

    def __init__(self, pad_id: int, neg_types: list[str], pad_to_multiple_of: int | None = None):
        self.pad_id = pad_id
        self.neg_index = {t: i for i, t in enumerate(neg_types)}
        self.multiple = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        rows, labels = [], []
        for key in ("chosen_ids", "rejected_ids"):
            for f in features:
                rows.append(f["prompt_ids"] + f[key])
                labels.append([IGNORE_INDEX] * len(f["prompt_ids"]) + f[key])
        longest = max(len(r) for r in rows)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        n = len(rows)
        input_ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        label_t = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, labels)):
            input_ids[i, : len(r)] = torch.as_tensor(r)
            label_t[i, : len(r)] = torch.as_tensor(lab)
            attention[i, : len(r)] = 1
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": label_t,
            "neg_type": torch.as_tensor([self.neg_index[f["neg_type"]] for f in features], dtype=torch.long),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in features[0]:
                batch[key] = torch.as_tensor([f[key] for f in features], dtype=torch.float32)
        return batch


class PreferenceDataModule(TokenDataModule):
    """Preference pairs (see ``datamodules/preference_format.py``) for CaPO and other DPO-style losses.

    ``on_bad_record``: ``error`` stops at the first bad pair with a message naming its file and line;
    ``skip`` drops it, counts it by reason and reports the counts when the data is loaded and again at
    the end of training. Bad pairs: an empty or identical chosen/rejected, a context that does not end
    in a user turn, a response truncated to zero tokens.
    """

    batch_kind: ClassVar[str] = "preference"  # utils.batch_kinds

    def __init__(
        self,
        path: str,
        tokenizer: str,
        val_path: str | None = None,
        val_fraction: float = 0.05,
        split: str = "train",
        max_length: int = 1024,
        truncation: str = "right",
        on_bad_record: str = "error",
        neg_types: list[str] | None = None,
        standard_format: str = "raw",
        chat_template: str | None = None,
        cache_dir: str | None = None,
        num_proc: int | None = None,
        pad_to_multiple_of: int | None = None,
        trust_remote_code: bool = False,
        **loader_kwargs: Any,
    ):
        super().__init__(**loader_kwargs)
        problems = []
        if truncation not in ("right", "error"):
            problems.append(f"data.truncation={truncation!r} must be 'right' (cut responses) or 'error'")
        if on_bad_record not in ("error", "skip"):
            problems.append(f"data.on_bad_record={on_bad_record!r} must be 'error' or 'skip'")
        if standard_format not in ("raw", "chat"):
            problems.append(f"data.standard_format={standard_format!r} must be 'raw' or 'chat'")
        if not isinstance(max_length, int) or max_length < 2:
            problems.append(f"data.max_length={max_length} must be an integer >= 2")
        if not 0 <= val_fraction < 1:
            problems.append(f"data.val_fraction={val_fraction} must be in [0, 1)")
        if neg_types is not None and (isinstance(neg_types, str) or not list(neg_types)):
            problems.append(
                f"data.neg_types={neg_types!r} must be a non-empty list of names, or null for all"
            )
        if problems:
            raise ConfigError(problems)
        self.path, self.val_path, self.split = path, val_path, split
        self.tokenizer_name, self.trust_remote_code, self.chat_template = (
            tokenizer,
            trust_remote_code,
            chat_template,
        )
        self.max_length, self.truncation, self.on_bad_record = max_length, truncation, on_bad_record
        self.keep_neg_types = list(neg_types) if neg_types is not None else None
        self.standard_format = standard_format
        self.val_fraction, self.cache_dir, self.num_proc = val_fraction, cache_dir, num_proc
        self.pad_to_multiple_of = pad_to_multiple_of
        self.tokenizer: Any = None
        self.skipped: Counter[str] = Counter()
        self.neg_types: list[str] = []
        self.keys: dict[str, str] = {}  # split -> fingerprint of its tokenised pairs

    # ---- data ------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self._tokenized(self.path)
        if self.val_path:
            self._tokenized(self.val_path)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self.skipped.clear()
        train, train_key = self._tokenized(self.path)
        if self.val_path:
            val, val_key = self._tokenized(self.val_path)
            self.train_dataset, self.val_dataset = train, val
            self.keys = {"train": train_key, "val": val_key}
        else:
            tr, va = split_by_group(train["group"], self.val_fraction, self.seed)
            self.train_dataset, self.val_dataset = train.select(tr), train.select(va)
            self.keys = {
                "train": fingerprint(train_key, "train", self.val_fraction, self.seed),
                "val": fingerprint(train_key, "val", self.val_fraction, self.seed),
            }
        types = set(self.train_dataset["neg_type"])
        if self.val_dataset is not None and len(self.val_dataset):
            types |= set(self.val_dataset["neg_type"])
        self.neg_types = sorted(types)
        self.collate = PreferenceCollator(
            self.tokenizer.pad_token_id, self.neg_types, self.pad_to_multiple_of
        )
        if self.skipped:
            log.warning("%s", self.skip_report())

    def example_lengths(self, dataset: datasets.Dataset) -> list[list[int]]:
        """Each pair adds two rows: context + chosen, context + rejected."""
        cols = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).to_dict()
        return [
            [len(p) + len(c), len(p) + len(r)]
            for p, c, r in zip(cols["prompt_ids"], cols["chosen_ids"], cols["rejected_ids"])
        ]

    def dataset(self, split: str) -> datasets.Dataset | None:
        return {"train": self.train_dataset, "val": self.val_dataset}[split]

    def set_columns(self, split: str, columns: dict[str, list[Any]]) -> None:
        """Add (or replace) per-pair columns of a split, e.g. precomputed reference log-probs. Call it
        before the split's dataloader is built."""
        ds = self.dataset(split)
        if ds is None or len(ds) == 0:
            return
        for name, values in columns.items():
            if len(values) != len(ds):
                raise ValueError(f"column {name!r} has {len(values)} values for {len(ds)} {split} pairs")
            if name in ds.column_names:
                ds = ds.remove_columns(name)
            ds = ds.add_column(name, list(values))
        if split == "train":
            self.train_dataset = ds
        else:
            self.val_dataset = ds

    def skip_report(self) -> str:
        total = sum(self.skipped.values())
        parts = ", ".join(
            f"{n} {reason} ({BAD_REASONS.get(reason, reason)})" for reason, n in self.skipped.items()
        )
        return f"skipped {total} bad preference pair(s) (data.on_bad_record=skip): {parts}"

    def teardown(self, stage: str | None = None) -> None:
        if self.skipped and stage == "fit":
            log.warning("end of run: %s", self.skip_report())

    def _tokenized(self, path: str) -> tuple[datasets.Dataset, str]:
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.tokenizer_name, self.trust_remote_code, self.chat_template)
        pairs = self._read_pairs(path)
        raw = datasets.Dataset.from_dict({f: [getattr(p, f) for p in pairs] for f in PAIR_FIELDS})
        key = fingerprint(
            "preference-v1",
            self.tokenizer_name,
            self.tokenizer.chat_template,
            len(self.tokenizer),
            self.max_length,
            self.truncation,
            self.standard_format,
            self.keep_neg_types,
            self.on_bad_record,
            self.split,
            files=[path],
        )
        ds = cached_map(
            raw,
            pair_encoder(self.tokenizer, self.max_length, self.truncation),
            key,
            self.cache_dir,
            "preference",
            f"Tokenizing {Path(path).name}",
            self.num_proc,
            remove_columns=["context", "prompt_text", "chosen", "rejected"],
        )
        ds = self._drop_bad(ds)
        if len(ds) == 0:
            raise DataError(self._nothing_left(path))
        return ds, key

    def _read_pairs(self, path: str) -> list[PreferencePair]:
        """The file's pairs in the standard form, filtered by ``data.neg_types``; bad records raise or
        are counted in ``skipped`` (``data.on_bad_record``)."""
        pairs: list[PreferencePair] = []
        for record in read_records(path, split=self.split):
            try:
                pair = normalise_pair(record, self.standard_format)
            except BadPairError as e:
                if self.on_bad_record == "error":
                    raise
                self.skipped[e.reason] += 1
                continue
            if self.keep_neg_types is None or pair.neg_type in self.keep_neg_types:
                pairs.append(pair)
        if not pairs:
            raise DataError(self._nothing_left(path))
        return pairs

    def _drop_bad(self, ds: datasets.Dataset) -> datasets.Dataset:
        """Raise on the first pair that failed to encode, or drop and count them (``on_bad_record``)."""
        bad = ds["bad"]
        if any(bad):
            if self.on_bad_record == "error":
                first = next(i for i, b in enumerate(bad) if b)
                row = ds[first]
                raise BadPairError(row["location"], row["bad"], f"data.max_length={self.max_length}")
            self.skipped.update(b for b in bad if b)
            ds = ds.select([i for i, b in enumerate(bad) if not b])
        return ds.remove_columns("bad")

    def _nothing_left(self, path: str) -> str:
        return (
            f"{path}: no preference pair left to train on"
            + (f" ({self.skip_report()})" if self.skipped else "")
            + (f"; data.neg_types={self.keep_neg_types} matched none" if self.keep_neg_types else "")
        )


def pair_encoder(tokenizer: Any, max_length: int, truncation: str) -> Any:
    """A ``datasets.map`` batch function: pair columns -> ``prompt_ids``/``chosen_ids``/``rejected_ids``
    and ``bad`` (the reason a pair could not be encoded, or "")."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], "bad": []}
        for i in range(len(batch["location"])):
            pair = PreferencePair(**{f: batch[f][i] for f in PAIR_FIELDS})
            try:
                enc, bad = encode_pair(tokenizer, pair, max_length, truncation), ""
            except BadPairError as e:
                enc, bad = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}, e.reason
            for k, v in enc.items():
                out[k].append(v)
            out["bad"].append(bad)
        return out

    return encode


PAIR_FIELDS = ("context", "prompt_text", "chosen", "rejected", "neg_type", "group", "location")


def split_by_group(groups: list[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/val split of pair indices in which all pairs of a group land on the same side (so
    no validation context was trained on)."""
    order: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(g, []).append(i)
    names = list(order)
    tr_g, va_g = split_indices(len(names), val_fraction, seed)
    train = sorted(i for g in tr_g for i in order[names[g]])
    val = sorted(i for g in va_g for i in order[names[g]])
    return train, val
