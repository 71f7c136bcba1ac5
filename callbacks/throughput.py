"""Training throughput of a run: tokens/s, step time, peak memory and an MFU estimate, as one JSON file.

Lightning's ``ThroughputMonitor`` logs rates to the loggers only; the GPU check (``scripts/gpu_check.py``)
needs one record per run with peak memory beside them, so this small callback measures the same
quantities itself. Tokens are the non-padding tokens of each batch (``attention_mask.sum()``, or every
``input_ids`` position for a padding-free packed batch); a module that makes its own tokens inside the
step (online RL: generated plus trained tokens) reports them as ``step_tokens``. The first ``warmup_steps`` steps (compilation,
allocator warm-up) are left out of the rates.

MFU = 6 · N · tokens/s / peak FLOP/s (the usual dense-transformer estimate: a forward and a backward
over N parameters; it leaves out attention and a second reference forward, so it is a lower bound for
CaPO and RLMEC). Peak FLOP/s come from Lightning's table of devices (``get_available_flops``); none is
known for CPUs, so MFU is null there.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


def batch_tokens(batch: Any) -> int:
    """Non-padding tokens of a collated batch (0 when it has no token ids)."""
    if not isinstance(batch, dict):
        return 0
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return int(mask.sum())
    ids = batch.get("input_ids")
    return int(ids.numel()) if isinstance(ids, torch.Tensor) else 0


def peak_memory_gib(device: torch.device) -> tuple[float, str]:
    """``(peak GiB, what was measured)``: CUDA's allocator peak, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process_peak_rss"


class ThroughputProbe(L.Callback):
    """Writes ``<out>`` (default ``<run>/throughput.json``) at the end of fit."""

    def __init__(self, out: str | None = None, warmup_steps: int = 1) -> None:
        self.out, self.warmup_steps = out, int(warmup_steps)
        self.tokens, self.seconds, self.steps, self.losses = 0, 0.0, 0, []
        self._start = 0.0
        self._batch_tokens = 0

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        self._sync(trainer)
        self._batch_tokens = batch_tokens(batch)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self._sync(trainer)
        elapsed = time.perf_counter() - self._start
        own = getattr(pl_module, "step_tokens", None)
        if isinstance(own, int):
            self._batch_tokens = own
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self.losses.append(float(loss.detach().float()))
        self.steps += 1
        if self.steps > self.warmup_steps:
            self.tokens += self._batch_tokens
            self.seconds += elapsed

    def summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """The run's throughput record."""
        from lightning.fabric.utilities.throughput import get_available_flops

        device = trainer.strategy.root_device
        params = sum(p.numel() for p in pl_module.parameters())
        rate = self.tokens / self.seconds if self.seconds > 0 else None
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(
            str(trainer.precision), torch.float32
        )
        peak_flops = get_available_flops(device, dtype) if device.type == "cuda" else None
        memory, memory_kind = peak_memory_gib(device)
        timed = max(0, self.steps - self.warmup_steps)
        return {
            "device": str(device),
            "precision": str(trainer.precision),
            "steps": self.steps,
            "timed_steps": timed,
            "tokens_per_s": rate,
            "step_time_s": self.seconds / timed if timed else None,
            "parameters": params,
            "mfu": 6 * params * rate / peak_flops if rate and peak_flops else None,
            "peak_memory_gib": memory,
            "peak_memory_kind": memory_kind,
            "loss_first": self.losses[0] if self.losses else None,
            "loss_last": self.losses[-1] if self.losses else None,
        }

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        out = Path(self.out) if self.out else Path(trainer.default_root_dir) / "throughput.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.summary(trainer, pl_module), indent=2) + "\n", encoding="utf-8")
