"""Loss masks built by prefix rendering, checked token by token."""

from __future__ import annotations

import pytest

from datamodules.chat_masks import IGNORE_INDEX, MaskPolicy, tokenize_chat
from utils.errors import DataError

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name three fruits."},
    {"role": "assistant", "content": "Apple, pear and plum."},
    {"role": "user", "content": "What color is the second one?"},
    {"role": "assistant", "content": "The pear is green."},
    {"role": "user", "content": "And the first?"},
    {"role": "assistant", "content": "The apple is red."},
]


def segments(tokenizer, messages):
    """The expected token sequence built by hand, one (token ids, role) piece per template part."""
    enc = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    pieces = [(enc(tokenizer.bos_token), None)]
    for m in messages:
        pieces.append((enc(f"<|{m['role']}|>\n"), None))  # role header: never trained on
        pieces.append((enc(m["content"] + "<|end|>\n"), m["role"]))  # content + end of turn
    return pieces


def expected(tokenizer, messages, roles, only_turns=None):
    ids, labels, turn = [], [], {r: -1 for r in ("system", "user", "assistant")}
    for piece, role in segments(tokenizer, messages):
        if role is not None:
            turn[role] += 1
        on = role in roles and (only_turns is None or (role, turn[role]) in only_turns)
        ids += piece
        labels += piece if on else [IGNORE_INDEX] * len(piece)
    return ids, labels


def test_assistant_mask_token_by_token(tokenizer):
    out = tokenize_chat(tokenizer, CONVERSATION, MaskPolicy(("assistant",)), max_length=512)
    ids, labels = expected(tokenizer, CONVERSATION, {"assistant"})
    assert out["input_ids"] == ids
    assert out["labels"] == labels
    trained = tokenizer.decode([t for t in out["labels"] if t != IGNORE_INDEX])
    assert trained == "Apple, pear and plum.<|end|>\nThe pear is green.<|end|>\nThe apple is red.<|end|>\n"


def test_user_mask_for_ask_model_token_by_token(tokenizer):
    out = tokenize_chat(tokenizer, CONVERSATION, MaskPolicy(("user",)), max_length=512)
    ids, labels = expected(tokenizer, CONVERSATION, {"user"})
    assert out["input_ids"] == ids
    assert out["labels"] == labels
    trained = tokenizer.decode([t for t in out["labels"] if t != IGNORE_INDEX])
    assert (
        trained == "Name three fruits.<|end|>\nWhat color is the second one?<|end|>\nAnd the first?<|end|>\n"
    )


def test_ask_model_can_skip_first_query(tokenizer):
    out = tokenize_chat(
        tokenizer, CONVERSATION, MaskPolicy(("user",), include_first_user=False), max_length=512
    )
    _, labels = expected(tokenizer, CONVERSATION, {"user"}, only_turns={("user", 1), ("user", 2)})
    assert out["labels"] == labels


def test_last_turn_policy(tokenizer):
    out = tokenize_chat(tokenizer, CONVERSATION, MaskPolicy(("assistant",), turns="last"), max_length=512)
    _, labels = expected(tokenizer, CONVERSATION, {"assistant"}, only_turns={("assistant", 2)})
    assert out["labels"] == labels


def test_all_zero_mask_raises(tokenizer):
    only_user = [{"role": "user", "content": "Hello there."}]
    with pytest.raises(DataError, match="loss mask is all zero"):
        tokenize_chat(tokenizer, only_user, MaskPolicy(("assistant",)), max_length=512, location="x.jsonl:3")


def test_truncation_policies(tokenizer):
    full = tokenize_chat(tokenizer, CONVERSATION, MaskPolicy(), max_length=512)
    n = len(full["input_ids"])
    right = tokenize_chat(tokenizer, CONVERSATION, MaskPolicy(), max_length=n - 5, truncation="right")
    left = tokenize_chat(tokenizer, CONVERSATION, MaskPolicy(), max_length=n - 5, truncation="left")
    assert right["input_ids"] == full["input_ids"][: n - 5] and right["labels"] == full["labels"][: n - 5]
    assert left["input_ids"] == full["input_ids"][5:] and left["labels"] == full["labels"][5:]
    assert tokenize_chat(tokenizer, CONVERSATION, MaskPolicy(), max_length=n - 5, truncation="drop") is None
    with pytest.raises(DataError, match="exceed data.max_length"):
        tokenize_chat(tokenizer, CONVERSATION, MaskPolicy(), max_length=n - 5, truncation="error")
    # Cut before the first assistant reply: nothing left to learn, so it is reported.
    with pytest.raises(DataError, match="all zero"):
        tokenize_chat(tokenizer, CONVERSATION, MaskPolicy(), max_length=12, truncation="right")
