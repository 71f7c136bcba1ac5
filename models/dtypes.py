"""``model.dtype`` names -> torch dtypes."""

from __future__ import annotations

import torch

from utils.errors import ConfigError

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(name: str | None) -> torch.dtype | str:
    """``auto``/None -> ``"auto"`` (the checkpoint's dtype); otherwise the torch dtype, or a ConfigError."""
    if name in (None, "auto"):
        return "auto"
    if name not in DTYPES:
        raise ConfigError([f"model.dtype={name!r} is not one of auto, {', '.join(DTYPES)}"])
    return DTYPES[name]
