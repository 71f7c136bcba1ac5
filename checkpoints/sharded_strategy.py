"""AtomicModelParallelStrategy: Lightning's ``ModelParallelStrategy`` (FSDP2) whose sharded checkpoints
are written beside their target and then swapped into place.

Lightning writes a sharded checkpoint (a folder of ``.distcp`` shards plus ``meta.pt``) straight into
its final path: a kill while ``last.ckpt`` is rewritten leaves a folder of old and new shards that
does not load. Here every rank writes into ``checkpoints/.<name>.tmp-<pid of rank 0>/``; once all ranks
are done, rank 0 moves it onto the target with ``utils.atomic.replace_folder`` (an atomic swap on
Linux). A kill at any point leaves the previous checkpoint intact; the temporary folder is removed by
the next run in the folder (``utils.temp_files.remove_stale_temp_files``), as for file checkpoints
(``checkpoints/io_plugin.py``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.strategies import ModelParallelStrategy

from utils.atomic import replace_folder
from utils.temp_files import temp_path_beside


def _fsync_folder_files(folder: Path) -> None:
    """Flush every file of ``folder`` (and the folder entry itself) to disk before it is renamed."""
    for path in folder.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicModelParallelStrategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` (same arguments) with sharded checkpoints written in place safely."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None
    ) -> None:
        if not self._save_distributed_checkpoint or "://" in str(filepath):
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        target = Path(self.broadcast(str(filepath)))
        tmp = Path(self.broadcast(str(temp_path_beside(target))))  # one name for all ranks: rank 0's
        if self.global_rank == 0 and tmp.exists():
            shutil.rmtree(tmp)
        self.barrier("sharded-checkpoint-start")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        self.barrier("sharded-checkpoint-written")
        if self.global_rank == 0:
            _fsync_folder_files(tmp)
            replace_folder(tmp, target)
        self.barrier("sharded-checkpoint-in-place")
