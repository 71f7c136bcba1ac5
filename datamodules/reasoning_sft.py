"""Reasoning SFT: ``{"question", "answer"}`` records as one-turn chats, with the evaluation's own prompt.

The user turn is exactly the chain-of-thought prompt that ``eval.py`` sends
(:func:`reasoning.prompts.build_cot_prompt` with the same prompt settings), and the assistant turn is
the record's rationale followed by the answer statement (``The answer is 42.``) that the extractor
reads. The loss is on the assistant tokens. A model trained this way can then be evaluated with greedy
CoT, Self-Consistency and Self-Agreement (arXiv 2311.08154) without any prompt mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datamodules.chat import ChatDataModule
from datamodules.reasoning import check_fields, to_reasoning_record
from evaluation.reasoning.spec import PROMPT_KEYS
from reasoning.prompts import PromptSettings, build_cot_prompt, format_solution
from utils.errors import ConfigError
from utils.record_files import Record


def sft_messages(record: Any, settings: PromptSettings) -> list[dict[str, str]]:
    """``[(system,) user: the CoT prompt, assistant: rationale + answer statement]`` for one record."""
    prompt = build_cot_prompt(record, settings)
    assert not isinstance(prompt, str)  # chat mode is checked at construction
    return [dict(m) for m in prompt] + [{"role": "assistant", "content": format_solution(record, settings)}]


class ReasoningSFTDataModule(ChatDataModule):
    """A :class:`ChatDataModule` over reasoning records (files or HF datasets, columns renamed by
    ``fields``); ``prompt`` holds the :class:`PromptSettings` the evaluation will use (chat on, and the
    scenario switches). Every other argument is :class:`ChatDataModule`'s."""

    def __init__(
        self,
        path: str,
        tokenizer: str,
        prompt: Mapping[str, Any] | None = None,
        fields: Mapping[str, str | None] | None = None,
        default_task: str | None = None,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        prompt = dict(prompt or {})
        problems = [f"data.prompt.{k} is not a prompt setting" for k in prompt if k not in PROMPT_KEYS]
        if not problems:
            try:
                self.prompt_settings = PromptSettings(**{k: v for k, v in prompt.items() if v is not None})
            except (TypeError, ValueError) as e:
                problems.append(f"data.prompt: {e}")
        if not problems and not self.prompt_settings.chat:
            problems.append(
                "data.prompt.chat must be true: reasoning SFT trains the chat prompt eval.py sends"
            )
        if not problems and self.prompt_settings.num_fewshot:
            problems.append("data.prompt.num_fewshot must be 0 for SFT (exemplars belong to evaluation)")
        if problems:
            raise ConfigError(problems)
        self.fields = check_fields(fields)
        self.default_task = default_task
        kwargs.setdefault("loss_roles", ["assistant"])
        super().__init__(path=path, tokenizer=tokenizer, cache_dir=cache_dir, **kwargs)

    def cache_key_parts(self) -> list:
        # The prompt settings shape the rendered text, so they key the token cache too.
        return [self.prompt_settings.to_dict(), self.fields, self.default_task]

    def to_messages(self, record: Record) -> list[dict[str, str]]:
        return sft_messages(to_reasoning_record(record, self.fields, self.default_task), self.prompt_settings)
