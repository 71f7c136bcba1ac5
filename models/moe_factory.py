"""Top-P MoE backbones from a ``model`` config (``model.kind``: ``moe`` or ``moe_upcycle``).

- ``moe``: a random-initialised :class:`QuartetMoEForCausalLM` (Llama-style decoder, MoE MLPs) sized
  by the config, with a tokenizer (the shipped one in ``conf/model/moe_tiny.yaml``).
- ``moe_upcycle``: a dense HF Llama/Qwen2/Mistral checkpoint (``model.pretrained``) turned into a
  Top-P MoE by copying its MLP into every expert (sparse upcycling), with that checkpoint's tokenizer.

The router lives under ``model.router`` with the fields of
:class:`~models.moe.router.RouterConfig` (``kind``, ``top_p``, ``top_k``,
``min_experts``, ``max_experts``, ``renormalize``) plus ``init_std``, so a sweep over the threshold is
``model.router.top_p=0.2,0.4,0.6``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from models.dtypes import resolve_dtype
from models.moe.router import RouterConfig
from models.quartet_moe import (
    QuartetMoEConfig,
    QuartetMoEForCausalLM,
    QuartetMoEModel,
    upcycle_dense_to_moe,
)
from models.quartet_moe.remote_code import write_remote_code
from models.registry import ModelKind, register_model_kind
from utils.errors import ConfigError

MOE_KINDS = ("moe", "moe_upcycle")
ROUTER_KEYS = ("kind", "top_p", "top_k", "min_experts", "max_experts", "renormalize", "init_std")


def router_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``model.router`` as :class:`QuartetMoEConfig` keyword arguments (``router_type``, ...)."""
    router = dict(cfg.get("router") or {})
    unknown = sorted(set(router) - set(ROUTER_KEYS))
    if unknown:
        raise ConfigError([f"model.router has unknown key(s) {unknown}; known: {list(ROUTER_KEYS)}"])
    names = {
        "kind": "router_type",
        "top_p": "router_top_p",
        "top_k": "router_top_k",
        "min_experts": "min_experts",
        "max_experts": "max_experts",
        "renormalize": "router_renormalize",
        "init_std": "router_init_std",
    }
    return {
        names[k]: float(v) if k in ("top_p", "init_std") and v is not None else v for k, v in router.items()
    }


def moe_config(cfg: Mapping[str, Any], vocab_size: int, tokenizer: Any = None) -> QuartetMoEConfig:
    """The :class:`QuartetMoEConfig` for ``kind=moe``; every problem is raised as one ConfigError."""
    missing = [k for k in ("hidden_size", "num_layers", "num_heads", "num_experts") if cfg.get(k) is None]
    if missing:
        raise ConfigError([f"model.{k} is required for model.kind=moe" for k in missing])
    fields: dict[str, Any] = {
        "vocab_size": int(vocab_size),
        "hidden_size": int(cfg["hidden_size"]),
        "intermediate_size": int(cfg.get("intermediate_size") or 4 * int(cfg["hidden_size"])),
        "moe_intermediate_size": cfg.get("moe_intermediate_size"),
        "num_hidden_layers": int(cfg["num_layers"]),
        "num_attention_heads": int(cfg["num_heads"]),
        "num_key_value_heads": cfg.get("num_kv_heads") or int(cfg["num_heads"]),
        "max_position_embeddings": int(cfg.get("max_position_embeddings", 1024)),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 10000.0))},
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", True)),
        "initializer_range": float(cfg.get("initializer_range", 0.02)),
        "num_experts": int(cfg["num_experts"]),
        "moe_every_k": int(cfg.get("moe_every_k", 1)),
        "moe_dispatch": cfg.get("dispatch", "fused"),
        "bos_token_id": getattr(tokenizer, "bos_token_id", None),
        "eos_token_id": getattr(tokenizer, "eos_token_id", None),
        "pad_token_id": getattr(tokenizer, "pad_token_id", None),
        **router_fields(cfg),
    }
    try:
        return QuartetMoEConfig(**fields)
    except (ValueError, TypeError) as e:
        raise ConfigError([f"model (kind=moe): {e}"]) from None


def moe_config_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Start-up check of a ``moe``/``moe_upcycle`` model config, without building anything."""
    kind = cfg.get("kind")
    try:
        if kind == "moe":
            moe_config(cfg, vocab_size=cfg.get("vocab_size") or 1)
        elif kind == "moe_upcycle":
            problems = []
            if not cfg.get("pretrained"):
                problems.append(
                    "model.pretrained must name a dense Llama/Qwen2/Mistral folder or hub id for "
                    "model=moe_upcycle"
                )
            fields = {k: v for k, v in (cfg.get("router") or {}).items() if k != "init_std"}
            router_fields(cfg)  # unknown keys
            try:
                RouterConfig(**fields).validate(int(cfg.get("num_experts", 8)))
            except (ValueError, TypeError) as e:
                problems.append(f"model.router: {e}")
            return problems
    except ConfigError as e:
        return e.problems
    return []


def build_moe_model(cfg: Mapping[str, Any], tokenizer: Any = None) -> torch.nn.Module:
    """Build (``kind=moe``) or upcycle (``kind=moe_upcycle``) a :class:`QuartetMoEForCausalLM`."""
    kind = cfg.get("kind")
    problems = moe_config_problems(cfg)
    if problems:
        raise ConfigError(problems)
    dtype = resolve_dtype(cfg.get("dtype", "float32"))
    if kind == "moe":
        vocab = len(tokenizer) if tokenizer is not None else int(cfg["vocab_size"])
        model = QuartetMoEForCausalLM(moe_config(cfg, vocab, tokenizer))
        if dtype != "auto":
            model = model.to(dtype)
    else:
        router = {k: v for k, v in (cfg.get("router") or {}).items() if k != "init_std"}
        init_std = (cfg.get("router") or {}).get("init_std")
        try:
            model = upcycle_dense_to_moe(
                str(cfg["pretrained"]),
                num_experts=int(cfg.get("num_experts", 8)),
                router=router,
                noise_std=float(cfg.get("noise_std", 0.0)),
                seed=int(cfg.get("seed", 0)),
                moe_every_k=int(cfg.get("moe_every_k", 1)),
                router_init_std=None if init_std is None else float(init_std),
                dtype=None if dtype == "auto" else dtype,
                moe_dispatch=cfg.get("dispatch", "fused"),
            )
        except (OSError, ValueError) as e:
            raise ConfigError([f"model=moe_upcycle: {str(e).splitlines()[0]}"]) from None
    if cfg.get("gradient_checkpointing"):
        # transformers 5 name; non-reentrant. The router aux tensors are returned by each block, so
        # the recompute during backward cannot count an aux loss twice.
        model.activation_checkpointing_enable()
        model.config.use_cache = False
    return model


for _name in MOE_KINDS:
    register_model_kind(
        ModelKind(
            _name,
            build_moe_model,
            check=moe_config_problems,
            generic_wrappers=False,
            hf_classes=(QuartetMoEConfig, QuartetMoEModel, QuartetMoEForCausalLM),
            write_code=write_remote_code,
            built_from_config=_name == "moe",
            packs_rows=False,  # QuartetAttention is one causal SDPA over the whole sequence
        )
    )
