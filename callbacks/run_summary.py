"""RunSummary: tracks the training loss curve; ``write_summary_json`` writes the run's ``summary.json``;
``closing_line`` is the one line a run ends with on screen."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from callbacks.hf_export import HFExport
from callbacks.nonfinite import NonFiniteGuard
from utils.atomic import write_json_atomic
from utils.run_folder import shown_path

#: ``first_loss``/``last_loss`` are means over this many steps at each end of the curve.
LOSS_WINDOW = 10


class RunSummary(L.Callback):
    """Records the loss of each optimizer step and the wall time. With gradient accumulation it is the
    loss of the micro-batch that completed the step: a loss is recorded only for a batch after which
    ``global_step`` went up, so the curve has exactly one point per optimizer step.

    ``first_loss``/``last_loss`` are means over the first and last ``window`` steps, which shows a
    trend without the noise of one batch; ``first_step_loss``/``last_step_loss`` are the raw values.
    The curve is part of the checkpoint, so it continues across resumes.
    """

    def __init__(self, window: int = LOSS_WINDOW):
        self.window = window
        self.losses: list[float] = []
        self.optimizer_steps = 0  # optimiser steps taken in this run (μ > 1 inner passes: μ per batch)
        self.start = time.time()
        self._step_before = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.time()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        advanced = trainer.global_step - self._step_before
        self.optimizer_steps += max(0, advanced)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and advanced > 0:
            self.losses.append(float(loss.detach()))

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints, so a resumed run's summary covers the whole loss curve."""
        return {"losses": list(self.losses)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.losses = [float(x) for x in state_dict.get("losses", [])]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "wall_time_s": round(time.time() - self.start, 2),
            "steps_recorded": len(self.losses),
            "steps_this_run": self.optimizer_steps,
        }
        if self.losses:
            w = min(self.window, len(self.losses))
            out.update(
                first_step_loss=self.losses[0],
                last_step_loss=self.losses[-1],
                first_loss=sum(self.losses[:w]) / w,
                last_loss=sum(self.losses[-w:]) / w,
            )
        return out


def write_summary_json(
    cfg: DictConfig,
    trainer: L.Trainer,
    output_dir: Path,
    ckpt_path: str | None,
    summary: RunSummary,
    guard: NonFiniteGuard,
    exporter: HFExport | None,
    status: str,
    error: str | None,
    metrics: dict[str, float],
) -> dict[str, Any]:
    """``summary.json`` (strict JSON: non-finite numbers are written as null); returns what it wrote.
    A resumed run that trained no new step keeps the previous summary's metrics."""
    path = output_dir / "summary.json"
    if not metrics and ckpt_path and path.is_file():
        with contextlib.suppress(ValueError):
            metrics = json.loads(path.read_text()).get("metrics") or {}
    ckpt_cb = trainer.checkpoint_callback
    last = output_dir / "checkpoints" / "last.ckpt"
    record = {
        **summary.summary(),
        "run_name": cfg.get("run_name"),
        "module": cfg.module._target_,
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "status": status,
        "error": error,
        "interrupted": status == "interrupted",
        "nonfinite": {
            "policy": guard.policy,
            "skipped": guard.skipped,
            "skipped_steps": guard.skipped_steps,
        },
        "resumed_from": ckpt_path,
        "metrics": metrics,
        "optimized_metric": cfg.get("optimized_metric"),
        "checkpoints": {
            "last": str(last) if last.exists() else None,
            "dir": str(ckpt_cb.dirpath) if ckpt_cb else None,
        },
        "hf_model": str(exporter.exported) if exporter and exporter.exported else None,
        "output_dir": str(output_dir),
        "launch": launch_record(trainer),
    }
    write_json_atomic(path, record)
    return record


def launch_record(trainer: L.Trainer) -> dict[str, Any]:
    """How the ranks were started: the launcher (``lightning``, ``torchrun`` or ``slurm``), Lightning's
    cluster environment, and the world (nodes × processes per node)."""
    from utils.launch_env import external_launcher

    env = trainer._accelerator_connector.cluster_environment
    return {
        "launcher": external_launcher() or "lightning",
        "cluster_environment": type(env).__name__,
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
    }


def closing_line(record: Mapping[str, Any], cwd: str | None = None) -> str:
    """The line a training run ends with: status, steps, time, the first and last loss (the
    ``summary.json`` values: means over the first/last ``LOSS_WINDOW`` steps), and where the run folder,
    ``summary.json`` and ``hf_model/`` are. ``record`` is what :func:`write_summary_json` wrote."""
    head = "done" if record.get("status") == "finished" else str(record.get("status"))
    steps = record.get("steps_this_run", 0)
    parts = [f"{head}: {steps} step{'' if steps == 1 else 's'} in {record.get('wall_time_s', 0.0):.1f} s"]
    if record.get("first_loss") is not None and record.get("last_loss") is not None:
        w = min(LOSS_WINDOW, int(record.get("steps_recorded") or 1))
        parts.append(
            f"loss {record['first_loss']:.4g} -> {record['last_loss']:.4g} (mean of the first/last {w} steps)"
        )
    folder = Path(record["output_dir"])
    files = ["summary.json"]
    hf_model = record.get("hf_model")
    if hf_model and Path(hf_model).parent == folder:
        files.append(Path(hf_model).name + "/")
    parts.append(f"run folder {shown_path(folder, cwd)}/ ({', '.join(files)})")
    if hf_model and Path(hf_model).parent != folder:
        parts.append(f"model {shown_path(hf_model, cwd)}/")
    elif not hf_model:
        parts.append("no hf_model/ (export=false or not exported)")
    return "; ".join(parts)
