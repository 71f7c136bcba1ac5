"""BesideTargetCheckpointIO: checkpoint files are written to a temporary file in the checkpoint's own
folder, flushed to disk, then renamed over the target.

Lightning's default writes through an fsspec transaction whose temporary file lives in the system
temp folder (a kill leaves a file of the checkpoint's size there, and the final move crosses file
systems). Here a kill leaves ``checkpoints/.<name>.tmp-<pid>``, which the next run in the folder
removes (``utils.temp_files.remove_stale_temp_files``), and the previous checkpoint stays intact.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from utils.atomic import atomic_path
from utils.errors import as_write_error


class BesideTargetCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):  # remote storage: Lightning's own (fsspec) path
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        except (OSError, RuntimeError) as e:  # a full disk: one line naming the file, last.ckpt intact
            error = as_write_error(e, path)
            if error is None:
                raise
            raise error from None
