"""Train Quartet's small byte-level BPE tokenizer (``assets/tokenizer/``) from text in the repo.

The tokenizer is trained on the bundled chat dialogues, reasoning problems and LM corpus
(``data/{chat,reasoning,corpus}``), and ships with a chat template. Byte-level BPE means any text can be encoded, so users' own data works with it as well.

Special tokens: ``<|begin_of_text|>`` (bos), ``<|end_of_text|>``, ``<|pad|>``, the role headers
``<|system|>``, ``<|user|>``, ``<|assistant|>`` and the end-of-turn marker ``<|end|>``, which is the
tokenizer's eos so that generation stops at the end of an assistant turn.

Usage: ``python scripts/build_tokenizer.py [--vocab-size 1024] [--out assets/tokenizer]``
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
SPECIAL_TOKENS = [
    "<|pad|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
]
# Each message: a role header on its own line, the content, then the end-of-turn marker.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


# The bundled sources the tokenizer is trained on (data made from the model's outputs, such as CaPO
# pairs, is left out so the tokenizer never depends on itself).
SOURCES = ("chat", "reasoning", "corpus")


def iter_texts(data_dir: Path) -> Iterator[str]:
    """Yield every string found in the JSONL records and text files of the bundled sources."""
    for path in sorted(p for src in SOURCES for p in (data_dir / src).rglob("*")):
        if path.suffix == ".txt":
            yield from path.read_text().splitlines()
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                if line.strip():
                    yield from _strings(json.loads(line))


def _strings(obj: object) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def build(vocab_size: int, data_dir: Path) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter_texts(data_dir), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>", "<|end_of_text|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 4096
    return fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "assets/tokenizer")
    args = parser.parse_args()
    fast = build(args.vocab_size, args.data_dir)
    fast.save_pretrained(args.out)
    print(f"saved tokenizer ({len(fast)} tokens) to {args.out}")


if __name__ == "__main__":
    main()
