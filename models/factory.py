"""Build the causal LM described by a ``model`` config, whatever its ``model.kind``.

The kinds live in the registry (``models/registry.py``): ``tiny`` and ``hf`` (``models/dense.py``),
``moe`` and ``moe_upcycle`` (``models/moe_factory.py``). For kinds with ``generic_wrappers`` the
factory then applies LoRA (``model.lora.*``, peft) and gradient checkpointing. For every kind it then
moves the float32 CPU linear layers onto oneDNN (``model.cpu_linear``, ``models/cpu_linear.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from models.cpu_linear import use_onednn_linears
from models.registry import MODEL_KINDS, get_model_kind
from utils.errors import QuartetError


def build_model(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None = None) -> PreTrainedModel:
    """Build or load the model of ``cfg`` (``model.kind``, default ``hf``)."""
    kind = get_model_kind(cfg.get("kind", "hf"))
    model = kind.build(cfg, tokenizer)
    if kind.generic_wrappers:
        model = _generic_wrappers(model, cfg)
    use_onednn_linears(model, cfg.get("cpu_linear", "auto"))
    return model


def _generic_wrappers(model: PreTrainedModel, cfg: Mapping[str, Any]) -> PreTrainedModel:
    """LoRA and gradient checkpointing, for the kinds that leave them to the factory."""
    if (cfg.get("lora") or {}).get("enabled"):
        model = apply_lora(model, cfg["lora"])
    if cfg.get("gradient_checkpointing"):
        # transformers 5: non-reentrant, per decoder block; it checkpoints the block's ``forward``, so
        # FSDP2's hooks on a ``fully_shard``-ed block stay outside and the recompute reuses their unshard.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def save_model_code(model: torch.nn.Module, out_dir: str | Path) -> bool:
    """After ``model.save_pretrained(out_dir)``: when the model is of a registered kind with its own
    classes (the Quartet MoE), write its modeling code and ``auto_map`` into the folder. Returns
    whether code was written."""
    for kind in MODEL_KINDS.values():
        if kind.hf_classes and kind.write_code and isinstance(model, kind.hf_classes[2]):
            kind.write_code(Path(out_dir))
            return True
    return False


def model_config_problems(cfg: Mapping[str, Any], packing: bool = False) -> list[str]:
    """Start-up problems of a ``model`` config, found without building it (kinds with a ``check``)."""
    if cfg.get("kind", "hf") not in MODEL_KINDS:
        return [f"model.kind={cfg.get('kind')!r} must be one of {', '.join(repr(k) for k in MODEL_KINDS)}"]
    return get_model_kind(cfg.get("kind", "hf")).problems(cfg, packing)


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
