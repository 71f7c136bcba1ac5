"""HFExport: write ``hf_model/`` (``save_pretrained`` model + tokenizer) at the end of training."""

from __future__ import annotations

from pathlib import Path

import lightning as L


class HFExport(L.Callback):
    """On fit end, asks the module to export itself (all ranks take part; rank 0 writes)."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.exported: Path | None = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.interrupted:
            return
        self.exported = pl_module.export_hf(self.out_dir)
