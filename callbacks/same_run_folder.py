"""SameRunFolder: every rank of a multi-process run must write into one run folder.

Under torchrun or srun each rank composes its own config, so a run folder that depends on the rank's
clock or environment (``hydra.run.dir=outputs/$(date +%s)`` on each node) would split the run: rank 0's
summary in one folder, another rank's checkpoint shards in another. Once the process group exists,
rank 0's folder is broadcast and every rank compares it with its own; all ranks stop together (no
hang) with one ``error:`` line when any differs.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from utils.errors import QuartetError


class SameRunFolder(L.Callback):
    def __init__(self, run_dir: str | Path):
        self.run_dir = str(Path(run_dir).resolve())

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size < 2:
            return
        rank0_dir = trainer.strategy.broadcast(self.run_dir, src=0)
        if trainer.strategy.reduce_boolean_decision(rank0_dir == self.run_dir, all=True):
            return
        raise QuartetError(
            f"the ranks of this run use different run folders (rank {trainer.global_rank}: {self.run_dir}, "
            f"rank 0: {rank0_dir}); pin one shared folder on every rank: hydra.run.dir=<folder>"
        )
