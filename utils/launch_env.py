"""Which launcher started this process, and its global rank, read from the environment before any
process group exists (Hydra resolvers, the run lock, the run-folder checks run that early).

Three ways a rank gets started, each with its own variables:

- ``torchrun`` (TorchElastic): ``RANK``, ``LOCAL_RANK``, ``GROUP_RANK`` (the node), ``WORLD_SIZE``;
- ``srun`` under SLURM (Lightning's ``SLURMEnvironment``): ``SLURM_PROCID``, ``SLURM_LOCALID``,
  ``SLURM_NODEID``, ``SLURM_NTASKS``;
- Lightning's own launcher (``python train.py trainer.devices=N``, or one such command per node with
  ``NODE_RANK``): ``LOCAL_RANK`` and ``NODE_RANK`` in the processes it starts.

``LOCAL_RANK == 0`` alone is not rank zero: under ``torchrun --nnodes 2`` every node has one.
"""

from __future__ import annotations

import os


def external_launcher() -> str | None:
    """``"torchrun"`` or ``"slurm"`` when the processes were started outside Lightning (one process per
    rank, each composing its own Hydra config); ``None`` for Lightning's own launcher."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return "torchrun"
    if SLURMEnvironment.detect():
        return "slurm"
    return None


def world_size() -> int:
    """How many ranks the external launcher started (1 when not known before the trainer exists)."""
    launcher = external_launcher()
    if launcher == "torchrun":
        return int(os.environ.get("WORLD_SIZE", 1))
    if launcher == "slurm":
        return int(os.environ.get("SLURM_NTASKS", 1))
    return 1


def rank_label() -> str:
    """``""`` for the global rank 0; otherwise a name for this process's files, e.g. ``rank1``
    (``node1-local0`` under Lightning's launcher, where the global rank needs the device count)."""
    launcher = external_launcher()
    if launcher == "torchrun":
        rank = int(os.environ["RANK"])
    elif launcher == "slurm":
        rank = int(os.environ["SLURM_PROCID"])
    else:
        local, node = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("NODE_RANK", 0))
        if node:
            return f"node{node}-local{local}"
        rank = local
    return f"rank{rank}" if rank else ""


def is_rank_zero() -> bool:
    """True for the one process that writes the run folder's shared files (config, summary, exports)."""
    return rank_label() == ""


def check_shared_run_dir(run_dir_raw: str | None, resume_dir: str | None) -> None:
    """Under torchrun/srun every rank composes its own config: a run folder named after the clock
    (``${now:...}``, the default) can differ between ranks by a second, or between nodes by more.
    Refuse that before training starts, asking for ``hydra.run.dir=<folder>``."""
    from utils.errors import ConfigError

    launcher = external_launcher()
    if launcher is None or world_size() < 2 or resume_dir:
        return
    if run_dir_raw is not None and "${now:" in run_dir_raw:
        command = "torchrun" if launcher == "torchrun" else "srun"
        raise ConfigError(
            [
                f"hydra.run.dir: under {command} ({world_size()} ranks) every rank must use the same run folder, "
                "but the default one is named after each rank's clock; pin it, e.g. hydra.run.dir=outputs/myrun"
                + (" (in sbatch: hydra.run.dir=outputs/slurm-$SLURM_JOB_ID)" if launcher == "slurm" else "")
            ]
        )


def submitit_requeue_signal() -> int | None:
    """In a job that submitit started on SLURM (a ``-m hydra/launcher=slurm`` sweep job): the signal
    SLURM sends before the time limit, submitit's ``--signal=<SIG>@<delay>`` (``SIGUSR2`` unless
    ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise). Lightning's SLURM requeue must listen on that one, not
    on its default ``SIGUSR1``. ``None`` outside such a job."""
    import signal

    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


def slurm_plugins() -> list:
    """Trainer plugins for the launch: in a submitit SLURM job, Lightning's ``SLURMEnvironment`` with
    submitit's signal as its requeue signal (``submitit_requeue_signal``); else none (auto-detected)."""
    requeue = submitit_requeue_signal()
    if requeue is None:
        return []
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(requeue_signal=requeue)] if SLURMEnvironment.detect() else []
