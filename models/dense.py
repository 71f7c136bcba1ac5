"""Dense causal-LM kinds.

- ``tiny``: a random-initialised Llama-style (or Qwen2/Mistral-style) model built from the config,
  with the tokenizer shipped in ``assets/tokenizer`` (made by ``scripts/build_tokenizer.py``).
- ``hf``: any ``AutoModelForCausalLM`` by local folder or hub id (``model.pretrained``), with a dtype
  option. ``trust_remote_code`` stays off unless the user turns it on; Quartet's own MoE folders load
  without it (their classes are registered by ``models/registry.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from models.dtypes import resolve_dtype
from models.registry import ModelKind, register_model_kind
from utils.errors import ConfigError, QuartetError
from utils.model_paths import check_model_location

TINY_ARCHS = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "mistral": "MistralConfig"}


def build_tiny(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None) -> PreTrainedModel:
    """A random-initialised small dense model sized by ``cfg`` (vocabulary from the tokenizer)."""
    import transformers

    arch = cfg.get("arch", "llama")
    if arch not in TINY_ARCHS:
        raise ConfigError([f"model.arch={arch!r} must be one of {', '.join(TINY_ARCHS)}"])
    config_cls = getattr(transformers, TINY_ARCHS[arch])
    vocab = len(tokenizer) if tokenizer is not None else int(cfg["vocab_size"])
    config = config_cls(
        vocab_size=vocab,
        hidden_size=int(cfg["hidden_size"]),
        intermediate_size=int(cfg["intermediate_size"]),
        num_hidden_layers=int(cfg["num_layers"]),
        num_attention_heads=int(cfg["num_heads"]),
        num_key_value_heads=int(cfg.get("num_kv_heads") or cfg["num_heads"]),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 1024)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        eos_token_id=getattr(tokenizer, "eos_token_id", None),
        pad_token_id=getattr(tokenizer, "pad_token_id", None),
        attn_implementation=cfg.get("attn_implementation", "sdpa"),
    )
    dtype = resolve_dtype(cfg.get("dtype", "float32"))
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32 if dtype == "auto" else dtype)


def load_hf(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None = None) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained(model.pretrained)`` with ``model.dtype``."""
    name = cfg.get("pretrained")
    if not name:
        raise ConfigError(["model.pretrained is required for model=hf (a local folder or a hub id)"])
    check_model_location(name, "model.pretrained")
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(cfg.get("dtype", "auto")),
        "trust_remote_code": bool(cfg.get("trust_remote_code", False)),
    }
    if cfg.get("attn_implementation"):
        kwargs["attn_implementation"] = cfg["attn_implementation"]
    try:
        AutoConfig.from_pretrained(str(name), trust_remote_code=kwargs["trust_remote_code"])
        return AutoModelForCausalLM.from_pretrained(str(name), **kwargs)
    except (OSError, ValueError) as e:
        raise QuartetError(f"could not load model {name!r}: {str(e).splitlines()[0]}") from None


def tiny_config_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Start-up problems of a ``model=tiny`` config: sizes are positive integers, heads divide the width."""
    problems = []
    for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
        if k in cfg and (not isinstance(cfg[k], int) or isinstance(cfg[k], bool) or cfg[k] < 1):
            problems.append(f"model.{k}={cfg[k]} must be a positive integer")
    width, heads = cfg.get("hidden_size"), cfg.get("num_heads")
    if not problems and isinstance(width, int) and isinstance(heads, int) and width % heads:
        problems.append(f"model.hidden_size={width} must be divisible by model.num_heads={heads}")
    return problems


register_model_kind(ModelKind("tiny", build_tiny, check=tiny_config_problems, built_from_config=True))
register_model_kind(ModelKind("hf", load_hf, needs_pretrained=True))
