"""MoEHeatmap: experts per token as a heatmap of MoE layers × training steps.

After every ``every_n_steps`` optimizer steps it records the ``moe/layer{i}/experts_per_token`` values
the module logged for that step (the last micro-batch's under gradient accumulation; rank 0's batch
under DDP/FSDP) from ``trainer.callback_metrics``, so the picture shows exactly the logged numbers.
After each validation, at the end of training (and every ``draw_every_n_steps`` steps if set) rank 0
draws it:

- into the run folder as a PNG (``path``, default ``moe_experts_heatmap.png``), with the matrix next
  to it as JSON (same name, ``.json``: ``steps``, ``layers``, ``experts_per_token[layer][step]``);
- into TensorBoard as an image (``tag``), when a TensorBoardLogger is attached.

The history is part of the checkpoint (``state_dict``), so a resumed run continues the same heatmap.
Drawing uses matplotlib's Agg canvas directly (no pyplot, no display needed).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from utils.atomic import atomic_path, write_text_atomic

PATTERN = re.compile(r"^moe/layer(\d+)/experts_per_token$")


class MoEHeatmap(L.Callback):
    def __init__(
        self,
        path: str | None = None,
        every_n_steps: int = 1,
        draw_every_n_steps: int = 0,
        tag: str = "moe/experts_per_token_heatmap",
        max_columns: int = 400,
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps} must be >= 1")
        self.path = Path(path) if path else None
        self.every_n_steps = int(every_n_steps)
        self.draw_every_n_steps = int(draw_every_n_steps)
        self.tag = tag
        self.max_columns = int(max_columns)
        self.steps: list[int] = []
        self.layers: list[int] = []
        self.values: list[list[float]] = []  # one entry per recorded step: a value per layer
        self._seen_step = -1

    # ---- the data ----------------------------------------------------------------------------
    def matrix(self) -> np.ndarray:
        """[layers, recorded steps] experts per token (NaN where a layer was not logged)."""
        if not self.values:
            return np.zeros((len(self.layers), 0))
        return np.asarray(self.values, dtype=np.float64).T

    def record(self, step: int, metrics: dict[str, Any]) -> bool:
        found = {int(m.group(1)): float(v) for k, v in metrics.items() if (m := PATTERN.match(k))}
        if not found:
            return False
        new = sorted(set(found) - set(self.layers))
        if new:  # a layer first seen now: earlier columns get NaN for it
            old = self.layers
            self.layers = sorted(set(old) | set(new))
            pos = {layer: i for i, layer in enumerate(old)}
            self.values = [
                [row[pos[la]] if la in pos else math.nan for la in self.layers] for row in self.values
            ]
        self.steps.append(int(step))
        self.values.append([found.get(layer, math.nan) for layer in self.layers])
        return True

    # ---- hooks ---------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seen_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._seen_step:  # no optimizer step yet (gradient accumulation)
            return
        self._seen_step = step
        if step % self.every_n_steps:
            return
        recorded = self.record(step, trainer.callback_metrics)
        if recorded and self.draw_every_n_steps and step % self.draw_every_n_steps == 0:
            self.draw(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.draw(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "layers": list(self.layers),
            "values": [list(r) for r in self.values],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = [int(s) for s in state.get("steps", [])]
        self.layers = [int(la) for la in state.get("layers", [])]
        self.values = [[float(v) for v in row] for row in state.get("values", [])]

    # ---- drawing -------------------------------------------------------------------------------
    def draw(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero or not self.steps:
            return
        image = self.render()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_png(self.path, image)
            data = {
                "steps": self.steps,
                "layers": self.layers,
                "experts_per_token": [[_json_float(v) for v in row] for row in self.matrix()],
            }
            write_text_atomic(self.path.with_suffix(".json"), json.dumps(data))
        from lightning.pytorch.loggers import TensorBoardLogger

        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    self.tag, image, global_step=trainer.global_step, dataformats="HWC"
                )

    def render(self) -> np.ndarray:
        """The heatmap as an RGB uint8 array [H, W, 3]."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        mat, steps = self.matrix(), np.asarray(self.steps)
        if mat.shape[1] > self.max_columns:  # average neighbouring columns for display
            edges = np.linspace(0, mat.shape[1], self.max_columns + 1).astype(int)
            mat = np.stack([np.nanmean(mat[:, a:b], axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)
            steps = np.asarray([steps[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
        fig = Figure(figsize=(8, 1.2 + 0.45 * max(1, len(self.layers))), dpi=100)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        half = (steps[1] - steps[0]) / 2 if len(steps) > 1 else 0.5
        im = ax.imshow(
            mat,
            aspect="auto",
            origin="lower",
            interpolation="nearest",
            cmap="viridis",
            extent=(steps[0] - half, steps[-1] + half, -0.5, len(self.layers) - 0.5),
        )
        ax.set_yticks(range(len(self.layers)))
        ax.set_yticklabels([str(la) for la in self.layers])
        ax.set_xlabel("training step")
        ax.set_ylabel("MoE layer")
        ax.set_title("experts per token")
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
        fig.tight_layout()
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _json_float(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _write_png(path: Path, image: np.ndarray) -> None:
    from matplotlib.image import imsave

    with atomic_path(path) as tmp:
        imsave(tmp, image, format="png")
