"""Quartet's models: the backbone/tokenizer factory, the MoE layers and the Quartet MoE causal LM.

Importing ``models`` registers every model kind (``models/registry.py``): ``tiny`` and ``hf``
(``models/dense.py``), ``moe`` and ``moe_upcycle`` (``models/moe_factory.py``, which also registers
the Quartet MoE classes with transformers' Auto classes).
"""

from models import dense, moe_factory  # noqa: F401  (register the model kinds)
from models.dtypes import resolve_dtype
from models.factory import apply_lora, build_model, decoder_layers, model_config_problems, save_model_code
from models.registry import MODEL_KINDS, ModelKind, get_model_kind, register_model_kind
from models.tokenizer import load_tokenizer

__all__ = [
    "MODEL_KINDS",
    "ModelKind",
    "apply_lora",
    "build_model",
    "decoder_layers",
    "get_model_kind",
    "load_tokenizer",
    "model_config_problems",
    "register_model_kind",
    "resolve_dtype",
    "save_model_code",
]
