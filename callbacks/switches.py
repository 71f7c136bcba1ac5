"""The trainer's on/off switches win over the ``callbacks`` group.

Lightning refuses ``enable_progress_bar=False`` (or ``enable_model_summary=False``) when a progress bar
(or model summary) callback is in the list, as the default ``callbacks`` group has. Quartet drops that
callback instead, so ``trainer.enable_progress_bar=false`` works with any callbacks group.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback, ModelSummary, ProgressBar


def drop_switched_off(callbacks: list[Callback], trainer_cfg: Any) -> list[Callback]:
    """``callbacks`` without the progress bar / model summary that ``trainer_cfg`` switches off."""
    off: tuple[type, ...] = ()
    if trainer_cfg.get("enable_progress_bar", True) is False:
        off += (ProgressBar,)
    if trainer_cfg.get("enable_model_summary", True) is False:
        off += (ModelSummary,)
    return [c for c in callbacks if not (off and isinstance(c, off))]
