"""Shared fixtures-as-functions for the inference tests: a tokenizer with a chat template and tiny
random Llama models. Kept out of conftest.py so other test modules are unaffected."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ASSET_TOKENIZER = REPO / "assets" / "tokenizer"

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_CORPUS = [
    "Question: Tom has 3 apples. He buys 4 more. How many apples does he have? Answer: 3 + 4 = 7. "
    "The answer is 7.",
    "Mia has 12 pencils and gives 5 to Sam, so 12 - 5 = 7 pencils are left. #### 7",
    "A pen costs $3. Leo buys 4 pens, so he spends 4 * 3 = 12 dollars. The answer is 12.",
    "Is 17 greater than 12? Yes, 17 is greater. The answer is yes. Which option? (A) 1 (B) 2 (C) 3 (D) 4",
    "Here are 3 candidate solutions. Solution 1: ... Which final answer do most solutions agree on?",
]


def _train_tokenizer():
    """A throwaway byte-level BPE with chat special tokens (used when assets/tokenizer is missing)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|begin_of_text|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@functools.lru_cache(maxsize=1)
def _cached_tokenizer():
    if (ASSET_TOKENIZER / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(ASSET_TOKENIZER))
        if tok.chat_template and tok.eos_token_id is not None:
            return tok
    return _train_tokenizer()


def make_tokenizer():
    """The repo tokenizer when present (it has a chat template), else a freshly trained tiny one.

    A deep copy is returned so tests may change it (e.g. remove the chat template)."""
    import copy

    return copy.deepcopy(_cached_tokenizer())


def tiny_llama(
    vocab_size: int,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    eos_token_id: int | None = None,
    **config: object,
):
    """A random-initialised Llama in eval mode (float32); ``config`` overrides ``LlamaConfig`` fields."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=1024,
        eos_token_id=eos_token_id,
        pad_token_id=0,
    )
    for key, value in config.items():
        setattr(cfg, key, value)
    return LlamaForCausalLM(cfg).eval()
