"""The model-kind registry: ``model.kind`` -> how to build it.

Each kind module (``models/dense.py``, ``models/moe_factory.py``) registers its kinds when imported;
``models/__init__.py`` imports them all, so ``import models`` (or any ``models.*``) fills the registry.
A kind that brings its own transformers classes lists them in ``hf_classes``; registering the kind
registers them with ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM``, so every loader in
Quartet opens such a saved folder without ``trust_remote_code``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.cpu_linear import cpu_linear_problems
from utils.errors import ConfigError

Builder = Callable[[Mapping[str, Any], Any], Any]
Checker = Callable[[Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class ModelKind:
    """One ``model.kind``.

    Attributes:
        name: the ``model.kind`` value.
        build: ``(model cfg, tokenizer or None) -> nn.Module``.
        check: start-up check of the config without building anything (list of problems).
        generic_wrappers: whether LoRA / gradient checkpointing are applied by the factory
            (False: the builder handles its own activation checkpointing and LoRA is not offered).
        hf_classes: ``(config_cls, base_model_cls, causal_lm_cls)`` to register with the Auto classes.
        write_code: for kinds with their own classes, writes the modeling code (and ``auto_map``) into
            a ``save_pretrained`` folder so plain transformers can load it with ``trust_remote_code``.
        needs_pretrained: the kind loads weights from ``model.pretrained`` (a folder or hub id).
        built_from_config: the kind is built from its config alone (no weights read), so the
            checkpoint pre-load check can build it on the meta device to compare shapes.
        packs_rows: its attention reads the row boundaries of a padding-free packed batch
            (``data.packing``, docs/packing.md); a kind whose attention doesn't would let packed rows
            attend to each other, so packing is refused for it at start-up.
    """

    name: str
    build: Builder
    check: Checker | None = None
    generic_wrappers: bool = True
    hf_classes: tuple[type, type, type] | None = None
    write_code: Callable[[Path], Any] | None = None
    needs_pretrained: bool = False
    built_from_config: bool = False
    packs_rows: bool = True

    def problems(self, cfg: Mapping[str, Any], packing: bool = False) -> list[str]:
        """Every start-up problem of a ``model`` config of this kind (with ``data.packing`` when
        ``packing``), found without building it."""
        out = list(self.check(cfg)) if self.check is not None else []
        out += cpu_linear_problems(cfg.get("cpu_linear", "auto"))
        if self.needs_pretrained and not cfg.get("pretrained"):
            out.append(f"model.pretrained must name a folder or hub id for model.kind={self.name}")
        if packing and not self.packs_rows:
            out.append(
                f"data.packing=true: model.kind={self.name}'s attention reads no row boundaries, so packed "
                "rows would attend to each other; use data.packing=false (data.max_tokens_per_batch or "
                "data.group_by_length=true also cut padding)"
            )
        return out


MODEL_KINDS: dict[str, ModelKind] = {}


def register_model_kind(kind: ModelKind) -> ModelKind:
    """Add ``kind`` to the registry (and its transformers classes to the Auto classes)."""
    MODEL_KINDS[kind.name] = kind
    if kind.hf_classes is not None:
        register_auto_classes(*kind.hf_classes)
    return kind


def register_auto_classes(config_cls: type, base_model_cls: type, causal_lm_cls: type) -> None:
    """Make ``AutoConfig``/``AutoModel``/``AutoModelForCausalLM`` resolve ``config_cls.model_type``."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
    AutoModel.register(config_cls, base_model_cls, exist_ok=True)
    AutoModelForCausalLM.register(config_cls, causal_lm_cls, exist_ok=True)


def get_model_kind(name: str | None) -> ModelKind:
    """The registered kind ``name``, or a ConfigError listing the known ones."""
    if name not in MODEL_KINDS:
        known = ", ".join(repr(k) for k in MODEL_KINDS)
        raise ConfigError([f"model.kind={name!r} must be one of {known}"])
    return MODEL_KINDS[name]
