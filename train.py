"""Quartet training: `python train.py [experiment=...] [group=option] [key=value]`.

``main`` is a thin Hydra wrapper around the pure, importable ``train(cfg)``, which returns the final
metrics; ``main`` returns ``cfg.optimized_metric`` so sweepers (Optuna) can optimise it.
"""

from __future__ import annotations

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
    """Fit ``cfg.module`` on ``cfg.data`` with ``cfg.trainer``; write ``summary.json``; return metrics."""
    import lightning as L
    from hydra.utils import instantiate

    from callbacks.hf_export import HFExport
    from callbacks.run_summary import RunSummary
    from utils.atomic import write_json_atomic
    from utils.config_validation import validate_train_config
    from utils.rich_config import print_and_save_config
    from utils.run_folder import resolve_ckpt_path

    validate_train_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    L.seed_everything(cfg.seed, workers=True)
    # Read and validate the data before anything is written to the run folder.
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = instantiate(cfg.module)
    rank0 = int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
    if cfg.get("print_config", True) and rank0:
        print_and_save_config(cfg, output_dir / "config_tree.log")
    callbacks: list[L.Callback] = [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c
    ]
    summary = RunSummary()
    callbacks.append(summary)
    exporter = HFExport(output_dir / "hf_model") if cfg.get("export") else None
    if exporter:
        callbacks.append(exporter)
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg and "_target_" in lg]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    log.info("training %s on %s (output: %s)", cfg.module._target_, cfg.data._target_, output_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if trainer.interrupted:
        log.warning("training was interrupted; resume with ckpt_path=last or resume_dir=%s", output_dir)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("validate_after_fit") and not trainer.interrupted:
        for result in trainer.validate(module, datamodule=datamodule, verbose=False):
            metrics.update({k: float(v) for k, v in result.items()})

    if trainer.is_global_zero:
        ckpt_cb = trainer.checkpoint_callback
        last = output_dir / "checkpoints" / "last.ckpt"
        write_json_atomic(
            output_dir / "summary.json",
            {
                **summary.summary(),
                "task_name": cfg.get("task_name"),
                "module": cfg.module._target_,
                "global_step": trainer.global_step,
                "epoch": trainer.current_epoch,
                "interrupted": trainer.interrupted,
                "resumed_from": ckpt_path,
                "metrics": metrics,
                "optimized_metric": cfg.get("optimized_metric"),
                "checkpoints": {
                    "last": str(last) if last.exists() else None,
                    "dir": str(ckpt_cb.dirpath) if ckpt_cb else None,
                },
                "hf_model": str(exporter.exported) if exporter and exporter.exported else None,
                "output_dir": str(output_dir),
            },
        )
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_main(cfg, train)


if __name__ == "__main__":
    run_cli(main)
