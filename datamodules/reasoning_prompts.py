"""Prompts for online RL: reasoning records (``{"question", "answer"}``, GSM8K's ``#### N`` understood)
rendered as the evaluation's chain-of-thought chat prompt and tokenised once; batches carry the prompt
token ids and the records (the rewards read their gold answers).

The prompt is exactly what ``eval.py`` sends (:func:`reasoning.prompts.build_cot_prompt` with the same
``data.prompt`` settings), so the policy is trained on the prompt it is evaluated on. Under a reward
that reads the gold answer (``answer_match``, ``grm``: ``require_gold``) a record without one is one
``error:`` line naming the file and line; under ``reward=format`` the answer may be missing.

Batch kind ``reasoning_prompts``: ``{"prompt_ids": [B, L] left-padded, "prompt_mask": [B, L],
"records": list[ReasoningRecord]}``. Loaders are resumable (``TokenDataModule``), so a resume sees the
same prompts in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from datamodules.base import TokenDataModule, split_indices
from datamodules.reasoning import DEFAULT_FIELDS, check_fields, to_reasoning_record
from evaluation.reasoning.spec import PROMPT_KEYS
from inference.chat import encode_prompt
from models.tokenizer import load_tokenizer
from reasoning.prompts import PromptSettings, build_cot_prompt
from reasoning.questions import ReasoningRecord
from utils.errors import ConfigError, DataError
from utils.record_files import Record, read_records


def record_without_gold(
    rec: Record, fields: Mapping[str, str | None], default_task: str | None
) -> ReasoningRecord:
    """A question record whose answer is absent (``gold=""``), for rewards that do not read it."""
    data = rec.data
    question = data.get(fields["question"] or "question")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{rec.location}: missing field '{fields['question']}' (the question text)")
    return ReasoningRecord(
        id=str(data.get(fields["id"] or "id", f"prompt-{rec.line}")),
        question=question.strip(),
        gold="",
        answer_type=str(data.get("answer_type") or "number"),
        task=str(data.get(fields["task"] or "task") or default_task or "reasoning"),
    )


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [B, L], mask [B, L])`` with every row right-aligned (left padding)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


class PromptCollator:
    """Left-pads the prompt ids of a batch and keeps its records."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        ids, mask = left_pad([it["prompt_ids"] for it in items], self.pad_id)
        return {"prompt_ids": ids, "prompt_mask": mask, "records": [it["record"] for it in items]}


class ReasoningPromptDataModule(TokenDataModule):
    """Reasoning prompts with their records for :class:`~lightning_modules.online_rl.OnlineRLModule`.

    Args:
        path, split, fields, default_task: the records (see ``datamodules/reasoning.py``).
        tokenizer, trust_remote_code, chat_template: the policy's tokenizer (``${model.*}``).
        prompt: the :class:`PromptSettings` of the evaluation (chat on).
        require_gold: every record must have a gold answer (set from the reward: ``${reward.needs_gold}``).
        max_length: the longest prompt in tokens; a longer one is an error naming its record.
        val_fraction: a seeded share of the prompts held out for validation (greedy answer reward).
    """

    batch_kind = "reasoning_prompts"  # utils/batch_kinds.py

    def __init__(
        self,
        path: str,
        tokenizer: str,
        split: str = "train",
        fields: Mapping[str, str | None] | None = None,
        default_task: str | None = None,
        prompt: Mapping[str, Any] | None = None,
        require_gold: bool = True,
        trust_remote_code: bool = False,
        chat_template: str | None = None,
        max_length: int = 512,
        val_fraction: float = 0.0,
        cache_dir: str | None = None,
        limit: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        prompt = {k: v for k, v in dict(prompt or {}).items() if v is not None}
        problems = [f"data.prompt.{k} is not a prompt setting" for k in prompt if k not in PROMPT_KEYS]
        if not problems:
            try:
                self.prompt_settings = PromptSettings(**prompt)
            except (TypeError, ValueError) as e:
                problems.append(f"data.prompt: {e}")
        if not isinstance(max_length, int) or max_length < 1:
            problems.append(f"data.max_length={max_length} must be a positive integer")
        if not 0 <= float(val_fraction) < 1:
            problems.append(f"data.val_fraction={val_fraction} must be in [0, 1)")
        if problems:
            raise ConfigError(problems)
        self.path, self.split, self.fields = str(path), split, check_fields(fields)
        self.default_task, self.require_gold, self.limit = default_task, bool(require_gold), limit
        self.tokenizer_name, self.trust_remote_code, self.chat_template = (
            tokenizer,
            trust_remote_code,
            chat_template,
        )
        self.max_length, self.val_fraction = max_length, float(val_fraction)
        self.tokenizer: Any = None
        self.records: list[ReasoningRecord] = []

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        """Tensors to the device; the records (frozen dataclasses) stay as they are."""
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _record(self, raw: Record) -> ReasoningRecord:
        answer_column = self.fields["answer"] or DEFAULT_FIELDS["answer"]
        if raw.data.get(answer_column) is None and not self.require_gold:
            return record_without_gold(raw, self.fields, self.default_task)
        if raw.data.get(answer_column) is None:
            raise DataError(
                f"{raw.location}: missing field '{answer_column}': the reward (answer_match or grm) compares "
                "each completion with the prompt's gold answer; add it, or train with reward=format"
            )
        return to_reasoning_record(raw, self.fields, self.default_task)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.tokenizer_name, self.trust_remote_code, self.chat_template)
        items = []
        for raw in read_records(self.path, split=self.split):
            rec = self._record(raw)
            ids = encode_prompt(self.tokenizer, build_cot_prompt(rec, self.prompt_settings))
            if len(ids) > self.max_length:
                raise DataError(
                    f"{raw.location}: the prompt is {len(ids)} tokens, over data.max_length={self.max_length}"
                )
            items.append({"prompt_ids": ids, "record": rec})
            if self.limit is not None and len(items) >= self.limit:
                break
        if not items:
            raise DataError(f"{self.path}: no prompts")
        self.records = [it["record"] for it in items]
        train_idx, val_idx = split_indices(len(items), self.val_fraction, self.seed)
        self.train_dataset = [items[i] for i in train_idx]
        self.val_dataset = [items[i] for i in val_idx]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.collate = PromptCollator(int(pad))
