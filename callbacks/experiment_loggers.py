"""Glue for the experiment trackers of ``conf/logger/`` (``logger=wandb``, ``logger=mlflow``).

Lightning's ``MLFlowLogger`` ends its MLflow run in ``finalize``; its ``WandbLogger`` leaves the W&B run
open, so a second ``train(cfg)`` in the same process (a Hydra multirun's next job, a notebook) would log
into the first job's run, and an offline run's files are only complete at interpreter exit.
"""

from __future__ import annotations

import sys


def finish_wandb_run(exit_code: int = 0) -> None:
    """End the W&B run this process started, if any (no-op when wandb was never imported)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)
