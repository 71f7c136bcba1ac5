"""The causal-LM backbone factory: tokenizers and models from a ``model`` config.

Kinds, chosen by ``model.kind``:
- ``tiny``: a random-initialised Llama-style (or Qwen2/Mistral-style) model built from a config,
  with the tokenizer shipped in ``assets/tokenizer`` (made by ``scripts/build_tokenizer.py``).
- ``hf``: any ``AutoModelForCausalLM`` by local folder or hub id (``model.pretrained``), with a
  dtype option and optional LoRA through peft. ``trust_remote_code`` stays off unless the user
  turns it on.
- ``moe`` / ``moe_upcycle``: a Top-P MoE causal LM, random-initialised or upcycled from a dense HF
  checkpoint (``lightning_modules/components/moe_backbone.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from utils.errors import ConfigError, QuartetError
from utils.model_paths import check_model_location

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
TINY_ARCHS = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "mistral": "MistralConfig"}


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


def resolve_dtype(name: str | None) -> torch.dtype | str:
    if name in (None, "auto"):
        return "auto"
    if name not in DTYPES:
        raise ConfigError([f"model.dtype={name!r} is not one of auto, {', '.join(DTYPES)}"])
    return DTYPES[name]


def build_model(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None = None) -> PreTrainedModel:
    """Build (``kind=tiny``) or load (``kind=hf``) the causal LM described by ``cfg``."""
    kind = cfg.get("kind", "hf")
    if kind == "tiny":
        model = _build_tiny(cfg, tokenizer)
    elif kind == "hf":
        model = _load_hf(cfg)
    elif kind in ("moe", "moe_upcycle"):
        from lightning_modules.components.moe_backbone import build_moe_model

        return build_moe_model(cfg, tokenizer)  # handles its own activation checkpointing; no LoRA
    else:
        raise ConfigError([f"model.kind={kind!r} must be 'tiny', 'hf', 'moe' or 'moe_upcycle'"])
    if (cfg.get("lora") or {}).get("enabled"):
        model = apply_lora(model, cfg["lora"])
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def _build_tiny(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None) -> PreTrainedModel:
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
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32 if dtype == "auto" else dtype)
    return model


def _load_hf(cfg: Mapping[str, Any]) -> PreTrainedModel:
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


def apply_lora(model: PreTrainedModel, lora: Mapping[str, Any]) -> PreTrainedModel:
    """Wrap ``model`` with a peft LoRA adapter; only adapter weights stay trainable."""
    from peft import LoraConfig, get_peft_model

    target = lora.get("target_modules", "all-linear")
    config = LoraConfig(
        r=int(lora.get("r", 8)),
        lora_alpha=int(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=list(target) if not isinstance(target, str) else target,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a (possibly peft-wrapped) HF causal LM, for per-block FSDP wrapping."""
    base = model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    inner = getattr(base, "model", base)
    layers = getattr(inner, "layers", None) or getattr(getattr(inner, "decoder", None), "layers", None)
    if layers is None:
        raise QuartetError(f"can't find the decoder blocks of {type(base).__name__} to shard with FSDP")
    return list(layers)
