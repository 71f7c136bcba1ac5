"""Quartet Top-P MoE causal LM: a Llama-style decoder whose MLPs are dynamic-routing MoE layers.

Architecture (pre-norm, as Llama): ``h = h + Attn(RMSNorm(h))``; ``h = h + FFN(RMSNorm(h))`` where FFN is
an :class:`~models.moe.layer.MoELayer` in MoE layers and a dense SwiGLU elsewhere.
Attention uses RoPE and ``torch.nn.functional.scaled_dot_product_attention`` (GQA optional).

The forward output carries ``router_aux``: one :class:`MoEAux` per MoE layer, returned functionally
(never accumulated on modules), so a training loop computes
``loss = lm_loss + moe_aux_loss(out.router_aux, alpha, beta)[0]`` and activation checkpointing cannot
count an aux loss twice. ``forward``'s ``loss`` is the plain LM loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast, ModelOutput
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from ..moe.layer import MoEAux, MoELayer, SwiGLUExperts, SwiGLUMLP
from ..moe.router import Router
from ..nll import masked_nll, token_logprobs
from .configuration_quartet_moe import QuartetMoEConfig


@dataclass
class QuartetMoEModelOutput(ModelOutput):
    """Decoder output: last hidden state, KV cache, optional per-layer hidden states, router aux."""

    last_hidden_state: Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    router_aux: list[MoEAux] | None = None


@dataclass
class QuartetMoECausalLMOutput(CausalLMOutputWithPast):
    """``CausalLMOutputWithPast`` plus ``router_aux``: one :class:`MoEAux` per MoE layer, in layer order."""

    router_aux: list[MoEAux] | None = None


class QuartetRMSNorm(nn.Module):
    """RMSNorm (computed in fp32, scaled in the input dtype)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class QuartetRotary(nn.Module):
    """RoPE cos/sin for given positions. Inverse frequencies are computed from the config (default RoPE
    by hand; "linear", "llama3", "yarn" through transformers' RoPE init functions) and cached per
    device as a plain attribute, not a buffer, so checkpoints carry nothing to go stale."""

    def __init__(self, config: QuartetMoEConfig) -> None:
        super().__init__()
        self.config = config
        self._cache: dict[torch.device, tuple[Tensor, float]] = {}

    def _inv_freq(self, device: torch.device) -> tuple[Tensor, float]:
        if device not in self._cache:
            params = self.config.rope_parameters or {}
            rope_type = params.get("rope_type", "default")
            if rope_type == "default":
                dim = self.config.head_dim
                theta = float(params.get("rope_theta", 10000.0))
                exponent = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim
                inv_freq, scale = 1.0 / (theta**exponent), 1.0
            else:
                inv_freq, scale = ROPE_INIT_FUNCTIONS[rope_type](self.config, device)
            self._cache[device] = (inv_freq.float().to(device), float(scale))
        return self._cache[device]

    def forward(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        inv_freq, scale = self._inv_freq(position_ids.device)
        freqs = position_ids.float()[..., None] * inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)
        return (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate q, k [B, heads, S, D] by cos/sin [B, S, D]."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


class QuartetAttention(nn.Module):
    """Causal self-attention with RoPE, GQA and SDPA."""

    def __init__(self, config: QuartetMoEConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        h, qkv_bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(h, self.num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, h, bias=config.attention_output_bias)

    def forward(
        self,
        hidden_states: Tensor,
        position_embeddings: tuple[Tensor, Tensor],
        attention_mask: Tensor | None,
        cache: Cache | None,
    ) -> Tensor:
        bsz, seq, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(bsz, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(bsz, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(bsz, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if self.num_kv_heads != self.num_heads:
            rep = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        causal = attention_mask is None and seq > 1 and k.shape[2] == seq
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attention_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
            scale=self.head_dim**-0.5,
        )
        return self.o_proj(out.transpose(1, 2).reshape(bsz, seq, -1))


class QuartetMoEDecoderLayer(GradientCheckpointingLayer):
    """One pre-norm decoder block (attention + MoE or dense SwiGLU). A distinct module class, so FSDP2
    can ``fully_shard`` each block (experts included) and activation checkpointing can wrap it.

    ``forward`` returns a flat tuple of tensors, ``(hidden,)`` for dense blocks and
    ``(hidden, router_logits, router_probs, dispatch_mask)`` for MoE blocks, so that both reentrant and
    non-reentrant checkpointing pass the router tensors (and their gradients) through.
    """

    def __init__(self, config: QuartetMoEConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.is_moe = config.is_moe_layer(layer_idx)
        self.input_layernorm = QuartetRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = QuartetAttention(config, layer_idx)
        self.post_attention_layernorm = QuartetRMSNorm(config.hidden_size, config.rms_norm_eps)
        if self.is_moe:
            self.mlp: nn.Module = MoELayer(
                config.hidden_size,
                config.moe_intermediate_size,
                config.num_experts,
                router=config.router_config,
                dispatch=config.moe_dispatch,
                layer_idx=layer_idx,
            )
        else:
            self.mlp = SwiGLUMLP(config.hidden_size, config.intermediate_size)

    def forward(
        self,
        hidden_states: Tensor,
        position_embeddings: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        cache: Cache | None = None,
        token_mask: Tensor | None = None,
        **kwargs,
    ) -> tuple[Tensor, ...]:
        residual = hidden_states
        h = self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask, cache)
        hidden_states = residual + h
        residual = hidden_states
        h = self.post_attention_layernorm(hidden_states)
        if not self.is_moe:
            return (residual + self.mlp(h),)
        h, aux = self.mlp(h, token_mask)
        return residual + h, aux.router_logits, aux.router_probs, aux.dispatch_mask


def build_attention_mask(
    attention_mask: Tensor | None,
    batch: int,
    q_len: int,
    past_len: int,
    window: int | None,
    device: torch.device,
) -> Tensor | None:
    """Boolean SDPA mask [B or 1, 1, q_len, past_len + q_len] (True = may attend), or None when plain
    causal attention (``is_causal``, or a single query over the whole cache) is exact.

    Combines causality over absolute cache positions, an optional padding mask [B, past_len + q_len]
    and an optional sliding window (key within ``window`` positions of the query). Rows with no allowed
    key (queries at padding positions) are opened fully so SDPA returns no NaN; their outputs are unused.
    """
    kv_len = past_len + q_len
    padded = attention_mask is not None and not bool(attention_mask.all())
    window_active = window is not None and kv_len > window
    if not padded and not window_active and (past_len == 0 or q_len == 1):
        return None
    q_pos = torch.arange(past_len, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    allowed = k_pos <= q_pos
    if window_active:
        allowed = allowed & (k_pos > q_pos - window)
    allowed = allowed[None, None]
    if padded:
        allowed = allowed & attention_mask[:, None, None, -kv_len:].bool()
    return allowed | ~allowed.any(dim=-1, keepdim=True)


class QuartetMoEPreTrainedModel(PreTrainedModel):
    config_class = QuartetMoEConfig
    config: QuartetMoEConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["QuartetMoEDecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, SwiGLUExperts):
            init.normal_(module.gate_up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)
        elif isinstance(module, Router):
            router_std = self.config.router_init_std if self.config.router_init_std is not None else std
            init.normal_(module.weight, mean=0.0, std=router_std)
        elif isinstance(module, QuartetRMSNorm):
            init.ones_(module.weight)


class QuartetMoEModel(QuartetMoEPreTrainedModel):
    """The decoder stack (``embed_tokens``, ``layers``, ``norm``), Llama-style attribute names."""

    def __init__(self, config: QuartetMoEConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            QuartetMoEDecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = QuartetRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = QuartetRotary(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> QuartetMoEModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        cache = cache if cache is not None else past_key_values
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        bsz, seq = inputs_embeds.shape[:2]
        if use_cache is None:  # no KV cache while training unless asked for: it would only hold memory
            use_cache = self.config.use_cache and not self.training
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            use_cache = False
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if not use_cache:
            cache = None
        past_len = cache.get_seq_length() if cache is not None else 0

        mask_2d = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
        if position_ids is None:
            if mask_2d is not None:
                position_ids = (mask_2d.long().cumsum(-1) - 1).clamp_min(0)[:, -seq:]
            else:
                position_ids = torch.arange(past_len, past_len + seq, device=inputs_embeds.device)[None]
        if attention_mask is not None and attention_mask.dim() == 4:
            attn_mask = attention_mask
            if attn_mask.dtype != torch.bool:
                attn_mask = attn_mask > torch.finfo(attn_mask.dtype).min / 2
        else:
            attn_mask = build_attention_mask(
                mask_2d, bsz, seq, past_len, self.config.attention_window, inputs_embeds.device
            )
        token_mask = mask_2d[:, -seq:].reshape(-1).bool() if mask_2d is not None else None
        position_embeddings = self.rotary_emb(position_ids, inputs_embeds.dtype)

        hidden = inputs_embeds
        all_hidden: list[Tensor] = []
        router_aux: list[MoEAux] = []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden)
            outs = layer(
                hidden,
                position_embeddings=position_embeddings,
                attention_mask=attn_mask,
                cache=cache,
                token_mask=token_mask,
            )
            hidden = outs[0]
            if layer.is_moe:
                router_aux.append(
                    MoEAux(
                        router_logits=outs[1],
                        router_probs=outs[2],
                        dispatch_mask=outs[3],
                        token_mask=token_mask,
                        layer_idx=layer.layer_idx,
                    )
                )
        hidden = self.norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)
        return QuartetMoEModelOutput(
            last_hidden_state=hidden,
            cache=cache,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            router_aux=router_aux,
        )


def causal_lm_loss(logits: Tensor, labels: Tensor, num_items_in_batch: int | Tensor | None = None) -> Tensor:
    """Next-token NLL in fp32 (:func:`masked_nll`): position t predicts ``labels[t + 1]``; -100 is
    ignored. Mean over counted tokens, or sum / ``num_items_in_batch`` when given (gradient accumulation)."""
    logp, mask = token_logprobs(logits, labels)
    return masked_nll(logp, mask, num_items_in_batch)


class QuartetMoEForCausalLM(QuartetMoEPreTrainedModel, GenerationMixin):
    """Causal LM head over :class:`QuartetMoEModel`; ``model.model.layers`` are the decoder blocks."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: QuartetMoEConfig) -> None:
        super().__init__(config)
        self.model = QuartetMoEModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        output_hidden_states: bool | None = None,
        past_key_values: Cache | None = None,
        num_items_in_batch: int | Tensor | None = None,
        **kwargs,
    ) -> QuartetMoECausalLMOutput:
        """Returns logits, the plain LM ``loss`` when ``labels`` are given, the KV ``cache`` and
        ``router_aux`` (one :class:`MoEAux` per MoE layer) for the router losses/statistics."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, Tensor):
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = causal_lm_loss(logits, labels, num_items_in_batch) if labels is not None else None
        return QuartetMoECausalLMOutput(
            loss=loss,
            logits=logits,
            cache=out.cache,
            hidden_states=out.hidden_states,
            router_aux=out.router_aux,
        )
