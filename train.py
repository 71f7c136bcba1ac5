"""Quartet training: `python train.py [experiment=...] [group=option] [key=value]`.

``main`` is a thin Hydra wrapper around the pure, importable ``train(cfg)``, which returns the final
metrics; ``main`` returns ``cfg.optimized_metric`` so sweepers (Optuna) can optimise it.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("QUARTET_ROOT", str(ROOT))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from utils.entrypoint import run_cli, run_main  # noqa: E402
from utils.hydra_resolvers import register_resolvers  # noqa: E402

register_resolvers()
log = logging.getLogger("quartet.train")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit ``cfg.module`` on ``cfg.data`` with ``cfg.trainer``; write ``summary.json``; return metrics.

    The run folder is locked while training (``utils.run_lock``), and a folder that already holds a
    run is only reused to continue it (``ckpt_path``/``resume_dir``)."""
    import lightning as L
    from hydra.utils import instantiate

    from callbacks.experiment_loggers import finish_wandb_run
    from callbacks.run_summary import closing_line
    from checkpoints.preload_check import check_checkpoint_file, check_checkpoint_fits
    from models import model_config_problems
    from utils.config_validation import validate_train_config
    from utils.launch_env import is_rank_zero
    from utils.run_folder import resolve_ckpt_path
    from utils.run_lock import RunFolderLock
    from utils.temp_files import remove_stale_temp_files

    packing = bool((cfg.get("data") or {}).get("packing"))
    validate_train_config(cfg, functools.partial(model_config_problems, packing=packing))
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    # A truncated/corrupt checkpoint or one of another model shape fails here, not mid-fit.
    checkpoint = check_checkpoint_file(ckpt_path, cfg.module.get("_target_"))
    if checkpoint is not None:
        check_checkpoint_fits(str(ckpt_path), checkpoint, cfg.module.get("model"))
        del checkpoint
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # (nothing logged before bad input fails)
    rank0 = is_rank_zero()  # torchrun/srun ranks included (utils.launch_env)
    if rank0:  # tokenisation leftovers of a killed run (a live writer keeps its file open)
        remove_stale_temp_files(cfg.data.get("cache_dir"), ["tmp*"], min_age_s=60)
    # Read and validate the data before anything is written to the run folder.
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = instantiate(cfg.module)
    with RunFolderLock(output_dir, enabled=rank0):
        finished = False
        try:
            metrics, record = _fit(cfg, module, datamodule, output_dir, ckpt_path, rank0)
            finished = True
        finally:
            finish_wandb_run(0 if finished else 1)  # logger=wandb: one W&B run per train(cfg)
    if record is not None:  # rank 0: the last line, after any logger's own closing output
        log.info(closing_line(record))  # where everything is, the loss, the time
    return metrics


def _fit(
    cfg: DictConfig,
    module: Any,
    datamodule: Any,
    output_dir: Path,
    ckpt_path: str | None,
    rank0: bool,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Fit; return the metrics and, on rank 0, the ``summary.json`` record."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from callbacks.csv_logger import TrimCSVOnResume
    from callbacks.hf_export import HFExport
    from callbacks.nonfinite import NonFiniteGuard
    from callbacks.preemption import GracefulInterrupt
    from callbacks.run_summary import RunSummary, write_summary_json
    from callbacks.same_run_folder import SameRunFolder
    from callbacks.switches import drop_switched_off
    from checkpoints.io_plugin import BesideTargetCheckpointIO
    from utils.errors import NonFiniteLossError, TrainingInterrupted
    from utils.launch_env import slurm_plugins
    from utils.rich_config import print_and_save_config
    from utils.run_folder import check_folder_reuse
    from utils.temp_files import remove_stale_temp_files

    if rank0:
        check_folder_reuse(output_dir, cfg.get("ckpt_path"), cfg.get("resume_dir"))
        for folder in (output_dir, output_dir / "checkpoints"):  # we hold the lock: these are stale
            remove_stale_temp_files(folder, [".*.tmp-*"])
    if cfg.get("print_config", True) and rank0:
        print_and_save_config(cfg, output_dir / "config_tree.log")
    callbacks: list[L.Callback] = [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c
    ]
    callbacks = drop_switched_off(callbacks, cfg.trainer)  # trainer.enable_progress_bar=false wins
    summary = RunSummary()
    guard = NonFiniteGuard(cfg.get("nonfinite", "stop"))
    callbacks += [SameRunFolder(output_dir), summary, guard, TrimCSVOnResume()]
    interrupt = GracefulInterrupt(output_dir)  # its StopSignals covers every phase of the run
    exporter = HFExport(output_dir / "hf_model", interrupt.signals) if cfg.get("export") else None
    if exporter:
        callbacks.append(exporter)
    callbacks.append(interrupt)  # last: saves after the others' step-end hooks
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg and "_target_" in lg]
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[BesideTargetCheckpointIO(), *slurm_plugins()],
    )

    def write_summary(status: str, error: str | None, metrics: dict[str, float]) -> dict[str, Any] | None:
        if not trainer.is_global_zero:
            return None
        return write_summary_json(
            cfg, trainer, output_dir, ckpt_path, summary, guard, exporter, status, error, metrics
        )

    log.info("training %s on %s (output: %s)", cfg.module._target_, cfg.data._target_, output_dir)
    with interrupt.signals.installed():
        try:
            metrics = _run_phases(cfg, trainer, module, datamodule, ckpt_path, interrupt)
        except TrainingInterrupted as e:
            write_summary("interrupted", str(e), _metrics(trainer))
            raise
        except NonFiniteLossError as e:
            write_summary("stopped_nonfinite", str(e), _metrics(trainer))
            raise
        except SIGTERMException:  # Lightning's own SIGTERM path (SLURM auto-requeue): never exit 0
            msg = "training stopped by SIGTERM (SLURM auto-requeue: the requeued job resumes from its HPC checkpoint)"
            write_summary("interrupted", msg, _metrics(trainer))
            raise TrainingInterrupted(msg, 15) from None
        record = write_summary("interrupted" if trainer.interrupted else "finished", None, metrics)
    if trainer.interrupted:
        log.warning("training was interrupted; resume with ckpt_path=last or resume_dir=%s", output_dir)
    return metrics, record


def _run_phases(
    cfg: DictConfig, trainer: Any, module: Any, datamodule: Any, ckpt_path: str | None, interrupt: Any
) -> dict[str, float]:
    """fit (its export included), then the validation after fit; a stop signal that lands between
    or after them stops the run as one inside them does (``TrainingInterrupted``, never exit 0)."""
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = _metrics(trainer)
    if cfg.get("validate_after_fit") and not trainer.interrupted:
        _stop_if_signalled(trainer, interrupt, "the validation after fit")
        for result in trainer.validate(module, datamodule=datamodule, verbose=False):
            metrics.update({k: float(v) for k, v in result.items()})
    _stop_if_signalled(trainer, interrupt, "the end of the run")
    return metrics


def _stop_if_signalled(trainer: Any, interrupt: Any, phase: str) -> None:
    from callbacks.preemption import after_fit_message
    from utils.errors import TrainingInterrupted

    signum = interrupt.signals.received
    if signum is not None and not trainer.interrupted:
        raise TrainingInterrupted(
            after_fit_message(signum, phase, trainer.global_step, interrupt.run_dir), signum
        )


def _metrics(trainer: Any) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


# An absolute conf/ beside this file: the console script imports this module (Hydra would otherwise look
# for a python package `conf`), `python train.py` runs it as a file.
@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_main(cfg, train)


def cli() -> None:
    """The ``quartet-train`` console script (``pip install -e .``): the same as ``python train.py``."""
    run_cli(main)


if __name__ == "__main__":
    cli()
