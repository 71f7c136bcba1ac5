"""Realistic chat tokenizers for the tests, built in-process with ``tokenizers`` (no download).

Each is a byte-level BPE (the kind SmolLM2, Qwen and Llama 3 ship) trained on a small corpus, with
the family's special tokens and a chat template written here after the family's published format:

- ``chatml``: ChatML that injects a default system prompt when none is given, no BOS (SmolLM2/Qwen);
- ``llama3``: BOS ``<|begin_of_text|>``, ``<|start_header_id|>role<|end_header_id|>`` headers and
  ``<|eot_id|>``; the tokenizer's post-processor adds BOS too, as Llama 3's does;
- ``mistral``: ``<s>[INST] ... [/INST]answer</s>``, raising on a ``system`` role;
- ``gemma``: ``<start_of_turn>user`` / ``<start_of_turn>model`` turns, no system role (raises);
- ``long_chatml``: ChatML whose template is longer than 4 KB (a long default system prompt), as many
  real templates are (tool-use branches, long system prompts).

The fixtures are session-scoped; building all five takes well under a second.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SMOL_SYSTEM + "<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

MISTRAL_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)

GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# A default system prompt long enough to push the template past 4 KB (real ones carry tool-use
# instructions, safety rules and formatting guides).
LONG_SYSTEM = " ".join(
    f"Rule {i}: answer the question that was asked, keep earlier turns in mind, and say so plainly "
    "when you are unsure."
    for i in range(1, 41)
)
LONG_CHATML_TEMPLATE = CHATML_TEMPLATE.replace(SMOL_SYSTEM, LONG_SYSTEM)


@dataclass(frozen=True)
class Family:
    """How one model family's tokenizer is built: special tokens and chat template."""

    name: str
    template: str
    specials: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str
    add_bos: bool = False  # whether the post-processor prepends BOS (like Llama 3 and Mistral)


FAMILIES = {
    "chatml": Family(
        "chatml",
        CHATML_TEMPLATE,
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        None,
        "<|im_end|>",
        "<|endoftext|>",
    ),
    "llama3": Family(
        "llama3",
        LLAMA3_TEMPLATE,
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|end_of_text|>",
        add_bos=True,
    ),
    "mistral": Family(
        "mistral",
        MISTRAL_TEMPLATE,
        ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
        "<s>",
        "</s>",
        "</s>",
        add_bos=True,
    ),
    "gemma": Family(
        "gemma",
        GEMMA_TEMPLATE,
        ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"),
        "<bos>",
        "<eos>",
        "<pad>",
    ),
    "long_chatml": Family(
        "long_chatml",
        LONG_CHATML_TEMPLATE,
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        None,
        "<|im_end|>",
        "<|endoftext|>",
    ),
}


def training_corpus() -> list[str]:
    """Text to learn the BPE merges from: the bundled chat data plus the fixtures' system prompts."""
    lines = []
    for line in (ROOT / "data" / "chat" / "dialogues.jsonl").read_text(encoding="utf-8").splitlines()[:300]:
        lines.extend(m["content"] for m in json.loads(line)["messages"])
    return [*lines, SMOL_SYSTEM, LONG_SYSTEM, "Bonjour, ça va? Grüße aus Köln — 東京 🚀"]


@functools.cache
def _base_tokenizer_json(specials: tuple[str, ...]) -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    return tok.to_str()


def build_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """A fresh ``PreTrainedTokenizerFast`` for the family ``name`` (a key of ``FAMILIES``)."""
    fam = FAMILIES[name]
    tok = Tokenizer.from_str(_base_tokenizer_json(fam.specials))
    if fam.add_bos:
        bos_id = tok.token_to_id(fam.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{fam.bos} $A", pair=f"{fam.bos} $A {fam.bos} $B", special_tokens=[(fam.bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    kwargs: dict[str, Any] = {"eos_token": fam.eos, "pad_token": fam.pad}
    if fam.bos:
        kwargs["bos_token"] = fam.bos
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=fam.template, **kwargs)
    hf.add_special_tokens(
        {"additional_special_tokens": [s for s in fam.specials if s not in kwargs.values()]}
    )
    return hf


@pytest.fixture(scope="session")
def chatml_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer("chatml")


@pytest.fixture(scope="session")
def llama3_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer("llama3")


@pytest.fixture(scope="session")
def mistral_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer("mistral")


@pytest.fixture(scope="session")
def gemma_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer("gemma")


@pytest.fixture(scope="session")
def long_chatml_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer("long_chatml")


@pytest.fixture(scope="session")
def long_chatml_tokenizer_dir(tmp_path_factory, long_chatml_tokenizer) -> Path:
    """The > 4 KB-template tokenizer saved with ``save_pretrained`` (what ``data.tokenizer`` names)."""
    out = tmp_path_factory.mktemp("long_chatml_tokenizer")
    long_chatml_tokenizer.save_pretrained(out)
    return out
