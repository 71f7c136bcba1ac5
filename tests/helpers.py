"""Shared test helpers: compose the real Hydra configs, run train.py in- or out-of-process."""

from __future__ import annotations

import multiprocessing
import os
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from utils.hydra_resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("QUARTET_ROOT", str(ROOT))
register_resolvers()

# Small and fast: two steps of the tiny model, no progress bars.
FAST = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "print_config=false"]


def compose_cfg(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides, writing into ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.work_dir = str(ROOT)
    return cfg


class CrashAtStep(L.Callback):
    """Simulates a crash: raises once ``global_step`` reaches ``step`` (after that step's checkpoint)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


def run_script(
    script: str, args: list[str], timeout: int = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python <script> args`` from the repo root; returns the completed process (text output)."""
    # One intra-op thread, as in the pytest process (conftest): runs compared bitwise with in-process ones
    # must reduce in the same order.
    full_env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "QUARTET_ROOT": str(ROOT),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


# What train.py imports, loaded once into the fork server of ``start_script`` (see there).
SCRIPT_PRELOAD = [
    "torch",
    "lightning",
    "transformers",
    "datasets",
    "hydra",
    "train",
    "tests.helpers",
    "tests.hardening_helpers",
    "lightning_modules.sft",
    "lightning_modules.capo",
    "lightning_modules.topp_moe",
    "lightning_modules.rlmec",
    "datamodules.chat",
    "datamodules.preference",
    "datamodules.lm_corpus",
    "datamodules.rlmec",
]


def _script_main(script: str, args: list[str], log_prefix: str) -> None:
    """Body of a ``start_script`` process: ``python <script> args``, with stdout/stderr to files."""
    for fd, suffix in ((1, ".out"), (2, ".err")):
        os.dup2(os.open(log_prefix + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    os.environ.update({"QUARTET_ROOT": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    os.environ.pop("SLURM_JOB_ID", None)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)  # as run_script and the pytest process: bitwise-comparable runs
    os.chdir(ROOT)
    sys.argv = [str(ROOT / script), *args]
    runpy.run_path(str(ROOT / script), run_name="__main__")


def start_script(script: str, args: list[str], log_prefix: Path) -> multiprocessing.process.BaseProcess:
    """Start ``python <script> args`` as its own process and return it (``.pid``, ``.join()``,
    ``.exitcode``: the script's exit status, or ``-signal`` when a signal killed it); its output goes to
    ``<log_prefix>.out`` and ``.err``.

    The process is forked from a fork server that has already imported torch, Lightning and the
    project (``SCRIPT_PRELOAD``), then runs the script as ``__main__``: the same program as a fresh
    ``python <script>`` (a real process, with its own signals and exit status) without paying the
    ~10 s of imports each time, which is what lets the reliability suite kill dozens of runs."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(SCRIPT_PRELOAD)
    proc = ctx.Process(target=_script_main, args=(script, list(args), str(log_prefix)), daemon=True)
    proc.start()
    return proc


def load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """Model weights from a single-file Lightning checkpoint (weights_only load)."""
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"parameter {k} differs"
