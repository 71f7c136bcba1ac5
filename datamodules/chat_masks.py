"""Per-token loss masks for chat SFT and the Parrot Ask model, built by rendering prefixes.

For message i the chat template is rendered for ``messages[:i]`` and ``messages[:i+1]``; the
characters between the start of message i's *content* and the end of ``render(messages[:i+1])``
(the content plus the template's end-of-turn marker) are the trainable span of that message. Tokens
overlapping a trainable span get loss. This works with any chat template, including ones without
``{% generation %}`` markers, whose assistant masks would otherwise come out all zero.

- Chat SFT: ``loss_roles=("assistant",)`` (loss on every assistant turn).
- Ask model (METHODS.md §1): ``loss_roles=("user",)``, i.e.
  L_ask = −Σ_t Σ_j log p(q_t,j | q_1, r_1, …, q_{t−1}, r_{t−1}, q_t,<j);
  ``include_first_user`` chooses whether q_1 counts (default yes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from jinja2.exceptions import SecurityError, TemplateError

from algorithms.logprobs import IGNORE_INDEX
from inference.chat import unsafe_template_error
from utils.errors import DataError

TurnPolicy = Literal["all", "last"]
Truncation = Literal["right", "left", "drop", "error"]


@dataclass(frozen=True)
class MaskPolicy:
    """Which turns carry loss. ``turns='last'`` keeps only the last turn of a loss role."""

    loss_roles: tuple[str, ...] = ("assistant",)
    turns: TurnPolicy = "all"
    include_first_user: bool = True


def render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Render messages with the tokenizer's chat template, as text."""
    if not messages:
        try:
            return tokenizer.apply_chat_template([], tokenize=False)
        except Exception:  # noqa: BLE001 - many templates reject an empty list; it renders as ""
            return ""
    return tokenizer.apply_chat_template(messages, tokenize=False)


def trainable_char_spans(
    tokenizer: Any, messages: list[dict[str, str]], policy: MaskPolicy, location: str = "record"
) -> tuple[str, list[tuple[int, int]]]:
    """Return the full rendered text and the ``[start, end)`` character spans that carry loss."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError(
            f"{location}: the tokenizer has no chat template; set model.chat_template or use a chat model"
        )
    try:
        return _spans(tokenizer, messages, policy, location)
    except SecurityError as e:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise DataError(f"{location}: {unsafe_template_error(name, e)}") from None
    except TemplateError as e:  # e.g. Mistral and Gemma templates raise on a system turn
        roles = "/".join(m["role"] for m in messages)
        raise DataError(f"{location}: the chat template rejects this conversation ({roles}): {e}") from None


def _spans(
    tokenizer: Any, messages: list[dict[str, str]], policy: MaskPolicy, location: str
) -> tuple[str, list[tuple[int, int]]]:
    full = render(tokenizer, messages)
    selected = [i for i, m in enumerate(messages) if m["role"] in policy.loss_roles]
    if not policy.include_first_user:
        first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        selected = [i for i in selected if i != first_user]
    if policy.turns == "last":
        selected = selected[-1:]
    spans = []
    for i in selected:
        before = render(tokenizer, messages[:i])
        upto = render(tokenizer, messages[: i + 1])
        if not upto.startswith(before) or not full.startswith(upto):
            raise DataError(
                f"{location}: the chat template is not prefix-stable (rendering the first {i} messages is not "
                "a prefix of rendering more), so loss masks can't be built by prefix rendering"
            )
        content = messages[i]["content"]
        start = upto.find(content, len(before)) if content else -1
        if start < 0:
            stripped = content.strip()
            start = upto.find(stripped, len(before)) if stripped else -1
        if start < 0:
            raise DataError(
                f"{location}: message {i} ({messages[i]['role']}) is empty or not rendered by the template"
            )
        spans.append((start, len(upto)))
    return full, spans


def tokenize_chat(
    tokenizer: Any,
    messages: list[dict[str, str]],
    policy: MaskPolicy,
    max_length: int,
    truncation: Truncation = "right",
    location: str = "record",
) -> dict[str, list[int]] | None:
    """Tokenize one conversation into ``input_ids`` and ``labels`` (``-100`` where no loss).

    Returns ``None`` when ``truncation='drop'`` and the conversation is too long. Raises
    ``DataError`` when no token carries loss, so such an example is never trained on silently.
    """
    full, spans = trainable_char_spans(tokenizer, messages, policy, location)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    mask = [any(s < e_span and e > s_span for s_span, e_span in spans) for s, e in enc["offset_mapping"]]
    if len(ids) > max_length:
        if truncation == "drop":
            return None
        if truncation == "error":
            raise DataError(f"{location}: {len(ids)} tokens exceed data.max_length={max_length}")
        keep = slice(0, max_length) if truncation == "right" else slice(len(ids) - max_length, None)
        ids, mask = ids[keep], mask[keep]
    if not any(mask[1:]):  # the first token is never predicted
        roles = "/".join(policy.loss_roles)
        raise DataError(
            f"{location}: the loss mask is all zero: no {roles} tokens to train on "
            f"(turns={policy.turns}, max_length={max_length}, truncation={truncation})"
        )
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
    return {"input_ids": ids, "labels": labels}
