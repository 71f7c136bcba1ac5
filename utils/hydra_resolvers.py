"""OmegaConf resolvers used by the Hydra configs (registered by the entry points before composing)."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import OmegaConf

from utils.launch_env import is_rank_zero, rank_label


def run_dir(resume_dir: str | None, default: str) -> str:
    """``hydra.run.dir``: the resumed folder when ``resume_dir`` is set, else the default."""
    return str(resume_dir) if resume_dir else default


def config_subdir(resume_dir: str | None, output_dir: str | None = None) -> str | None:
    """``hydra.output_subdir``: ``.hydra`` for a new run folder; a new sub-folder when resuming or when
    the folder already holds a run, so the original ``.hydra/config.yaml`` (which ``resume_dir`` reads)
    is never overwritten. ``None`` (nothing saved) on every rank but 0 of a torchrun/srun launch:
    those ranks compose the same config in the same folder, and rank 0 saves it."""
    if not is_rank_zero():
        return None
    taken = output_dir is not None and (Path(output_dir) / ".hydra" / "config.yaml").exists()
    if not resume_dir and not taken:
        return ".hydra"
    return f".hydra/{'resume' if resume_dir else 'rerun'}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def log_suffix() -> str:
    """``${quartet_log_suffix:}``: ``""`` on rank 0, ``.rank1`` etc. elsewhere, so each rank of a
    multi-process run logs to its own ``<task>.log`` file in the shared run folder."""
    label = rank_label()
    return f".{label}" if label else ""


def gpus_per_node(accelerator: str, devices: int) -> int | None:
    """``hydra.launcher.gpus_per_node`` of ``hydra/launcher=slurm``: one GPU per device unless the
    trainer runs on CPUs (then none is requested)."""
    return None if str(accelerator) == "cpu" else int(devices)


def product(*values: int) -> int:
    """``${quartet_product:a,b}``: a × b (e.g. data-parallel size = devices × nodes)."""
    out = 1
    for v in values:
        out *= int(v)
    return out


def register_resolvers() -> None:
    resolvers = (
        ("quartet_run_dir", run_dir),
        ("quartet_config_subdir", config_subdir),
        ("quartet_product", product),
        ("quartet_log_suffix", log_suffix),
        ("quartet_gpus_per_node", gpus_per_node),
    )
    for name, fn in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
