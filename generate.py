"""Quartet data-making stages: `python generate.py stage=<name> [stage.key=value ...]`.

``main`` is a thin Hydra wrapper around the pure, importable ``generate(cfg)``, which runs the stage
named by ``cfg.stage.runner`` (see ``stages/__init__.py`` for the plug-in contract) and writes its
summary to ``summary.json`` in the run folder.

Example (CaPO negatives from the bundled dialogues with an SFT model as the generator):
    python generate.py stage=capo_negatives stage.generator.path=<run>/hf_model stage.output=pairs.jsonl
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
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from utils.entrypoint import run_cli, run_main  # noqa: E402
from utils.hydra_resolvers import register_resolvers  # noqa: E402

register_resolvers()
log = logging.getLogger("quartet.generate")


def generate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.stage``; write ``summary.json``; return the stage's summary."""
    import random

    import torch
    from hydra.utils import get_method

    from utils.atomic import write_json_atomic
    from utils.errors import ConfigError

    stage = cfg.get("stage")
    if stage is None or not stage.get("runner"):
        raise ConfigError(["no stage selected: pass stage=<name> (see conf/stage/)"])
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        raise ConfigError([f"{k} is required (set {k}=...)" for k in missing])
    try:
        runner = get_method(stage.runner)
    except Exception as e:  # noqa: BLE001 - a bad runner path is a config error
        raise ConfigError([f"stage.runner={stage.runner!r} can't be imported ({e})"]) from None
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    log.info("running stage %s", stage.runner)
    summary = runner(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / "summary.json", {"run_name": cfg.get("run_name"), **summary})
    return {
        k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


# An absolute conf/ beside this file: the console script imports this module (Hydra would otherwise look
# for a python package `conf`), `python generate.py` runs it as a file.
@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="generate")
def main(cfg: DictConfig) -> float | None:
    return run_main(cfg, generate, closing_line=True)


def cli() -> None:
    """The ``quartet-generate`` console script (``pip install -e .``): the same as ``python generate.py``."""
    run_cli(main)


if __name__ == "__main__":
    cli()
