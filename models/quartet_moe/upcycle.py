"""Sparse upcycling: turn a dense Llama/Qwen2/Mistral causal LM into a Quartet Top-P MoE LM.

Attention, norms, embeddings and the LM head are copied as they are. In every MoE layer each of the
N experts starts as a copy of the dense SwiGLU MLP (optionally plus Gaussian noise, to break the
symmetry between experts), and the router starts small and random (Komatsuzaki et al., "Sparse
Upcycling", arXiv 2212.05055). Dense layers (``moe_every_k > 1``) keep the dense MLP.

With zero noise and combine weights that sum to 1 per token (renormalised top-k, or top-p with
``router_renormalize=True``), every MoE layer computes ``sum_e w_e MLP(x) = MLP(x)``: the upcycled model
reproduces the dense model's logits exactly (up to float rounding).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..moe.router import RouterConfig
from .configuration_quartet_moe import SUPPORTED_ROPE_TYPES, QuartetMoEConfig
from .modeling_quartet_moe import QuartetMoEForCausalLM

SUPPORTED_DENSE_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}


def _unsupported(arch: str) -> ValueError:
    return ValueError(
        f"Cannot upcycle architecture {arch!r}: supported dense architectures are "
        f"{list(SUPPORTED_DENSE_ARCHITECTURES)} (Llama-style attention + gate_proj/up_proj/down_proj SwiGLU MLP)."
    )


def _architecture_of_config(cfg: Any) -> str:
    archs = list(getattr(cfg, "architectures", None) or [])
    for arch in archs:
        if arch in SUPPORTED_DENSE_ARCHITECTURES:
            return arch
    model_type = getattr(cfg, "model_type", None)
    if model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    raise _unsupported(archs[0] if archs else str(model_type))


def _router_fields(router: RouterConfig | dict | None) -> dict[str, Any]:
    if router is None:
        router = RouterConfig()
    if isinstance(router, dict):
        unknown = set(router) - set(RouterConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"Unknown router option(s) {sorted(unknown)}; known: {sorted(RouterConfig.__dataclass_fields__)}"
            )
        router = RouterConfig(**router)
    return {
        "router_type": router.kind,
        "router_top_p": router.top_p,
        "router_top_k": router.top_k,
        "min_experts": router.min_experts,
        "max_experts": router.max_experts,
        "router_renormalize": router.renormalize,
    }


def moe_config_from_dense(
    dense_cfg: Any,
    arch: str,
    num_experts: int,
    router: RouterConfig | dict | None = None,
    moe_every_k: int = 1,
    **overrides: Any,
) -> QuartetMoEConfig:
    """A :class:`QuartetMoEConfig` mirroring a dense Llama/Qwen2/Mistral config."""
    if getattr(dense_cfg, "hidden_act", "silu") != "silu":
        raise ValueError(f"Cannot upcycle {arch}: hidden_act must be 'silu', got {dense_cfg.hidden_act!r}")
    if getattr(dense_cfg, "mlp_bias", False):
        raise ValueError(f"Cannot upcycle {arch} with mlp_bias=True: the experts have no biases")
    rope = dict(
        getattr(dense_cfg, "rope_parameters", None) or {"rope_type": "default", "rope_theta": 10000.0}
    )
    if rope.get("rope_type", "default") not in SUPPORTED_ROPE_TYPES:
        raise ValueError(
            f"Cannot upcycle {arch} with rope_type {rope.get('rope_type')!r}; supported: {list(SUPPORTED_ROPE_TYPES)}"
        )
    window = None
    if arch == "MistralForCausalLM":
        window = getattr(dense_cfg, "sliding_window", None)
    elif arch == "Qwen2ForCausalLM" and getattr(dense_cfg, "use_sliding_window", False):
        raise ValueError(
            "Cannot upcycle Qwen2ForCausalLM with use_sliding_window=True (per-layer sliding windows are not "
            "supported); set use_sliding_window=False"
        )
    if arch == "Qwen2ForCausalLM":
        qkv_bias, o_bias = True, False
    else:
        qkv_bias = o_bias = bool(getattr(dense_cfg, "attention_bias", False))
    num_heads = dense_cfg.num_attention_heads
    fields: dict[str, Any] = {
        "vocab_size": dense_cfg.vocab_size,
        "hidden_size": dense_cfg.hidden_size,
        "intermediate_size": dense_cfg.intermediate_size,
        "moe_intermediate_size": dense_cfg.intermediate_size,
        "num_hidden_layers": dense_cfg.num_hidden_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": getattr(dense_cfg, "num_key_value_heads", None) or num_heads,
        "head_dim": getattr(dense_cfg, "head_dim", None) or dense_cfg.hidden_size // num_heads,
        "max_position_embeddings": dense_cfg.max_position_embeddings,
        "rms_norm_eps": dense_cfg.rms_norm_eps,
        "initializer_range": getattr(dense_cfg, "initializer_range", 0.02),
        "rope_parameters": rope,
        "attention_bias": qkv_bias,
        "attention_output_bias": o_bias,
        "attention_dropout": float(getattr(dense_cfg, "attention_dropout", 0.0) or 0.0),
        "attention_window": window,
        "tie_word_embeddings": bool(getattr(dense_cfg, "tie_word_embeddings", False)),
        "pad_token_id": getattr(dense_cfg, "pad_token_id", None),
        "bos_token_id": getattr(dense_cfg, "bos_token_id", None),
        "eos_token_id": getattr(dense_cfg, "eos_token_id", None),
        "num_experts": num_experts,
        "moe_every_k": moe_every_k,
        **_router_fields(router),
    }
    fields.update(overrides)
    return QuartetMoEConfig(**fields)


@torch.no_grad()
def _copy(dst: nn.Module, src: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


@torch.no_grad()
def upcycle_dense_to_moe(
    dense_model_or_path: nn.Module | str | os.PathLike,
    num_experts: int = 8,
    router: RouterConfig | dict | None = None,
    noise_std: float = 0.0,
    seed: int = 0,
    moe_every_k: int = 1,
    router_init_std: float | None = None,
    dtype: torch.dtype | None = None,
    **config_overrides: Any,
) -> QuartetMoEForCausalLM:
    """Upcycle a dense HF causal LM into a :class:`QuartetMoEForCausalLM`.

    Args:
        dense_model_or_path: a loaded ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``MistralForCausalLM``,
            or a directory/hub id loadable with ``AutoModelForCausalLM``.
        num_experts: N experts per MoE layer.
        router: router settings (:class:`RouterConfig` or dict of its fields); default top-p, p = 0.4.
        noise_std: std of the Gaussian noise added to every expert weight (absolute, in weight units;
            0 = exact copies).
        seed: seeds the expert noise and the router init (a private generator; global RNG untouched).
        moe_every_k: MoE in layers ``i % moe_every_k == 0``, dense MLP (copied) elsewhere.
        router_init_std: std of the router's normal init (default: the dense ``initializer_range``).
        dtype: parameter dtype of the result (default: the dense model's).
        config_overrides: extra :class:`QuartetMoEConfig` fields (e.g. ``moe_dispatch``).

    Raises:
        ValueError: unsupported architecture (naming it and the supported list) or configuration.
    """
    if isinstance(dense_model_or_path, (str, os.PathLike)):
        from transformers import AutoConfig, AutoModelForCausalLM

        dense_cfg = AutoConfig.from_pretrained(dense_model_or_path)
        _architecture_of_config(dense_cfg)  # fail before loading any weights
        dense = AutoModelForCausalLM.from_pretrained(dense_model_or_path, dtype=dtype or "auto")
    else:
        dense = dense_model_or_path
    arch = type(dense).__name__
    if arch not in SUPPORTED_DENSE_ARCHITECTURES:
        raise _unsupported(arch)

    cfg = moe_config_from_dense(
        dense.config,
        arch,
        num_experts,
        router,
        moe_every_k,
        router_init_std=router_init_std,
        **config_overrides,
    )
    param_dtype = dtype or next(dense.parameters()).dtype
    moe = QuartetMoEForCausalLM(cfg).to(param_dtype)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    init_std = router_init_std if router_init_std is not None else cfg.initializer_range

    _copy(moe.model.embed_tokens, dense.model.embed_tokens)
    _copy(moe.model.norm, dense.model.norm)
    if not cfg.tie_word_embeddings:
        _copy(moe.lm_head, dense.lm_head)
    for moe_layer, dense_layer in zip(moe.model.layers, dense.model.layers):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            _copy(getattr(moe_layer.self_attn, name), getattr(dense_layer.self_attn, name))
        _copy(moe_layer.input_layernorm, dense_layer.input_layernorm)
        _copy(moe_layer.post_attention_layernorm, dense_layer.post_attention_layernorm)
        mlp = dense_layer.mlp
        if not moe_layer.is_moe:
            _copy(moe_layer.mlp, mlp)
            continue
        experts = moe_layer.mlp.experts
        gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], dim=0).float()
        down = mlp.down_proj.weight.float()
        for e in range(num_experts):
            noise_gu = torch.randn(gate_up.shape, generator=gen) * noise_std if noise_std else 0.0
            noise_d = torch.randn(down.shape, generator=gen) * noise_std if noise_std else 0.0
            experts.gate_up_proj[e].copy_(gate_up.cpu() + noise_gu)
            experts.down_proj[e].copy_(down.cpu() + noise_d)
        router_w = moe_layer.mlp.router.weight
        router_w.copy_(torch.randn(router_w.shape, generator=gen) * init_std)
    if cfg.tie_word_embeddings:
        moe.tie_weights()
    device = next(dense.parameters()).device
    moe.to(device)
    moe.train(dense.training)
    return moe
