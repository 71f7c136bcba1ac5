"""Tokenizer loading for every model kind (``model.tokenizer`` / ``model.pretrained``)."""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from utils.errors import QuartetError
from utils.model_paths import check_model_location


def load_tokenizer(
    name_or_path: str, trust_remote_code: bool = False, chat_template: str | None = None
) -> PreTrainedTokenizerBase:
    """Load a tokenizer; give it a pad token (eos) when it has none."""
    check_model_location(name_or_path, "model.tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise QuartetError(f"could not load tokenizer {name_or_path!r}: {str(e).splitlines()[0]}") from None
    if chat_template:
        tok.chat_template = chat_template
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
