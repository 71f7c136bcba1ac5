"""Loss masks, preference spans, generation prompts and the token cache on realistic chat templates.

Every expectation is rendered by hand here, family by family, as a list of ``(text, trainable)``
segments, and tokenized segment by segment; the code under test renders prefixes with the chat
template and maps character spans to tokens, so the two computations share nothing but the tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from datamodules.chat import ChatDataModule
from datamodules.chat_masks import IGNORE_INDEX, MaskPolicy, tokenize_chat
from datamodules.preference import encode_pair
from datamodules.preference_format import PreferencePair
from inference.chat import apply_chat_template, encode_prompt
from tests.tokenizer_fixtures import LONG_SYSTEM, SMOL_SYSTEM
from utils.errors import DataError

Segments = list[tuple[str, bool]]
Msgs = list[dict[str, str]]

DIALOGUE: Msgs = [
    {"role": "user", "content": "Give me two ways to reverse a list in Python."},
    {
        "role": "assistant",
        "content": "1. Slicing: `xs[::-1]` returns a new list.\n2. In place: `xs.reverse()` — no copy.",
    },
    {"role": "user", "content": "Which one is faster for the second case? Ça dépend?"},
    {"role": "assistant", "content": "For reversing in place, `xs.reverse()` wins: it allocates nothing."},
]
CONTEXT, CHOSEN, REJECTED = DIALOGUE[:3], DIALOGUE[3]["content"], "Use a for loop to print the list."


def chatml(msgs: Msgs, role: str, system: str = SMOL_SYSTEM) -> Segments:
    segs: Segments = []
    if msgs[0]["role"] != "system":
        segs.append((f"<|im_start|>system\n{system}<|im_end|>\n", False))
    for m in msgs:
        segs += [(f"<|im_start|>{m['role']}\n", False), (m["content"] + "<|im_end|>\n", m["role"] == role)]
    return segs


def llama3(msgs: Msgs, role: str) -> Segments:
    segs: Segments = [("<|begin_of_text|>", False)]
    for m in msgs:
        segs += [
            (f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n", False),
            (m["content"] + "<|eot_id|>", m["role"] == role),
        ]
    return segs


def mistral(msgs: Msgs, role: str) -> Segments:
    segs: Segments = [("<s>", False)]
    for m in msgs:
        if m["role"] == "user":
            segs += [("[INST] ", False), (m["content"] + " [/INST]", role == "user")]
        else:
            segs.append((m["content"] + "</s>", role == "assistant"))
    return segs


def gemma(msgs: Msgs, role: str) -> Segments:
    segs: Segments = [("<bos>", False)]
    for m in msgs:
        name = "model" if m["role"] == "assistant" else "user"
        segs += [(f"<start_of_turn>{name}\n", False), (m["content"] + "<end_of_turn>\n", m["role"] == role)]
    return segs


def long_chatml(msgs: Msgs, role: str) -> Segments:
    return chatml(msgs, role, system=LONG_SYSTEM)


GENERATION_HEADER = {
    "chatml": "<|im_start|>assistant\n",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral": "",
    "gemma": "<start_of_turn>model\n",
    "long_chatml": "<|im_start|>assistant\n",
}
HAND: dict[str, Callable[[Msgs, str], Segments]] = {
    "chatml": chatml,
    "llama3": llama3,
    "mistral": mistral,
    "gemma": gemma,
    "long_chatml": long_chatml,
}
FIXTURE = {
    "chatml": "chatml_tokenizer",
    "llama3": "llama3_tokenizer",
    "mistral": "mistral_tokenizer",
    "gemma": "gemma_tokenizer",
    "long_chatml": "long_chatml_tokenizer",
}


def ids_of(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def expected(tok, segs: Segments) -> tuple[list[int], list[int]]:
    """Token ids and labels from hand-written segments, tokenized one segment at a time."""
    ids, labels = [], []
    for text, trainable in segs:
        seg_ids = ids_of(tok, text)
        ids += seg_ids
        labels += seg_ids if trainable else [IGNORE_INDEX] * len(seg_ids)
    return ids, labels


@pytest.mark.parametrize("family", list(HAND))
@pytest.mark.parametrize("role", ["assistant", "user"])
def test_loss_mask_token_by_token(request, family, role):
    tok = request.getfixturevalue(FIXTURE[family])
    segs = HAND[family](DIALOGUE, role)
    want_ids, want_labels = expected(tok, segs)
    assert tok.decode(want_ids) == "".join(t for t, _ in segs)  # the hand rendering round-trips
    got = tokenize_chat(tok, DIALOGUE, MaskPolicy(loss_roles=(role,)), max_length=4096)
    assert got["input_ids"] == want_ids
    assert got["labels"] == want_labels
    trained = tok.decode([t for t in got["labels"] if t != IGNORE_INDEX])
    assert trained == "".join(t for t, keep in segs if keep)
    assert ("Python" in trained, "allocates nothing" in trained) == (role == "user", role == "assistant")


def test_chatml_given_system_prompt_replaces_the_default(chatml_tokenizer):
    msgs = [{"role": "system", "content": "Answer in French."}, *DIALOGUE[:2]]
    got = tokenize_chat(chatml_tokenizer, msgs, MaskPolicy(), max_length=4096)
    segs = [
        ("<|im_start|>system\nAnswer in French.<|im_end|>\n", False),
        *chatml(DIALOGUE[:2], "assistant")[1:],
    ]
    assert (got["input_ids"], got["labels"]) == expected(chatml_tokenizer, segs)
    assert SMOL_SYSTEM not in chatml_tokenizer.decode(got["input_ids"])


def test_ask_model_without_first_user_turn_on_llama3(llama3_tokenizer):
    got = tokenize_chat(
        llama3_tokenizer, DIALOGUE, MaskPolicy(loss_roles=("user",), include_first_user=False), 4096
    )
    trained = llama3_tokenizer.decode([t for t in got["labels"] if t != IGNORE_INDEX])
    assert trained == DIALOGUE[2]["content"] + "<|eot_id|>"


@pytest.mark.parametrize("fixture", ["mistral_tokenizer", "gemma_tokenizer"])
def test_system_turn_on_a_template_without_one_is_a_data_error(request, fixture):
    tok = request.getfixturevalue(fixture)
    msgs = [{"role": "system", "content": "Be brief."}, *DIALOGUE[:2]]
    with pytest.raises(
        DataError, match=r"^chats.jsonl:7: the chat template rejects .*System role not supported"
    ):
        tokenize_chat(tok, msgs, MaskPolicy(), 4096, location="chats.jsonl:7")


@pytest.mark.parametrize("family", list(HAND))
def test_preference_spans_and_generation_prompt(request, family):
    tok = request.getfixturevalue(FIXTURE[family])
    context_segs = HAND[family](CONTEXT, "none")
    prompt_text = "".join(t for t, _ in context_segs) + GENERATION_HEADER[family]
    eot = {"chatml": "<|im_end|>\n", "long_chatml": "<|im_end|>\n", "llama3": "<|eot_id|>"}.get(
        family, {"mistral": "</s>", "gemma": "<end_of_turn>\n"}.get(family)
    )
    pair = PreferencePair(CONTEXT, None, CHOSEN, REJECTED, "neglect", "g", "pairs.jsonl:1")
    got = encode_pair(tok, pair, max_length=4096)
    assert got["prompt_ids"] == expected(tok, [*context_segs, (GENERATION_HEADER[family], False)])[0]
    assert got["chosen_ids"] == ids_of(tok, CHOSEN + eot)
    assert got["rejected_ids"] == ids_of(tok, REJECTED + eot)
    # Inference renders the same context with add_generation_prompt=True: one BOS, never two.
    assert apply_chat_template(tok, CONTEXT) == prompt_text
    prompt_ids = encode_prompt(tok, CONTEXT)
    assert prompt_ids == got["prompt_ids"]
    if tok.bos_token_id is not None:
        assert prompt_ids.count(tok.bos_token_id) == 1 and prompt_ids[0] == tok.bos_token_id
    # The chosen answer continues the prompt exactly as the full conversation renders it.
    full = tokenize_chat(tok, DIALOGUE, MaskPolicy(turns="last"), 4096)["input_ids"]
    assert full == got["prompt_ids"] + got["chosen_ids"]


def test_chat_cache_with_a_template_over_4kb(tmp_path, long_chatml_tokenizer_dir, long_chatml_tokenizer):
    template = long_chatml_tokenizer.chat_template
    assert len(template.encode()) > 4096
    data = tmp_path / "chats.jsonl"
    data.write_text("\n".join(json.dumps({"messages": DIALOGUE[: 2 + 2 * (i % 2)]}) for i in range(4)) + "\n")
    kwargs = dict(
        path=str(data),
        tokenizer=str(long_chatml_tokenizer_dir),
        val_fraction=0.0,
        batch_size=2,
        max_length=2048,
    )
    dm = ChatDataModule(cache_dir=str(tmp_path / "cache"), **kwargs)
    dm.setup()
    assert len(dm.train_dataset) == 4
    want = tokenize_chat(long_chatml_tokenizer, DIALOGUE, MaskPolicy(), 2048)
    assert dm.train_dataset[1]["input_ids"] == want["input_ids"]
    assert dm.train_dataset[1]["labels"] == want["labels"]
    cached = sorted(p.name for p in (tmp_path / "cache").glob("chat-*.arrow"))
    assert len(cached) == 1
    # A second DataModule reuses the cache; another template gets another key.
    again = ChatDataModule(cache_dir=str(tmp_path / "cache"), **kwargs)
    again.setup()
    assert sorted(p.name for p in (tmp_path / "cache").glob("chat-*.arrow")) == cached
    other_dir = tmp_path / "other_tok"
    long_chatml_tokenizer.save_pretrained(other_dir)
    (other_dir / "chat_template.jinja").write_text(template.replace("Rule 40", "Rule forty"))
    other = ChatDataModule(**{**kwargs, "tokenizer": str(other_dir)}, cache_dir=str(tmp_path / "cache"))
    other.setup()
    assert len(list((tmp_path / "cache").glob("chat-*.arrow"))) == 2
