"""Run-folder contract: checkpoint resolution, ``resume_dir`` config reuse, ``summary.json``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from utils.data_paths import path_exists
from utils.errors import ConfigError, QuartetError

log = logging.getLogger(__name__)
CONFIG_GROUPS = (
    "model",
    "module",
    "data",
    "trainer",
    "callbacks",
    "logger",
    "paths",
    "hydra",
    "experiment",
    "debug",
    "hparams_search",
    # eval.py's groups
    "task",
    "decoding",
    "backend",
)


# The key only one entry point's config has: what kind of run a saved config belongs to.
KIND_KEYS = {"train": "module", "eval": "task", "generate": "stage"}


def run_kind(cfg: DictConfig) -> str | None:
    """``train``, ``eval`` or ``generate``: the entry point whose config ``cfg`` is (None if unclear)."""
    kinds = [kind for kind, key in KIND_KEYS.items() if cfg.get(key) is not None]
    return kinds[0] if len(kinds) == 1 else None


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``None`` → fresh start; ``last`` → ``<run>/checkpoints/last.ckpt`` (fresh start with a message
    when the folder has none yet); anything else must be an existing file or sharded-checkpoint folder."""
    if not ckpt_path:
        return None
    if str(ckpt_path) == "last":
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.exists():
            return str(last)
        log.warning("ckpt_path=last: no checkpoint at %s yet; starting from scratch", last)
        return None
    if not path_exists(ckpt_path):
        raise QuartetError(f"ckpt_path={ckpt_path}: checkpoint not found")
    return str(ckpt_path)


def load_resume_config(cfg: DictConfig, task_overrides: list[str]) -> DictConfig:
    """The saved config of ``cfg.resume_dir`` with this command's plain ``key=value`` overrides on top.

    Config-group overrides (``trainer=ddp``) can't be re-applied to a saved config, so they are
    rejected with a clear message.
    """
    resume_dir = Path(cfg.resume_dir)
    saved_path = resume_dir / ".hydra" / "config.yaml"
    if not saved_path.is_file():
        raise QuartetError(f"resume_dir={resume_dir}: not a Quartet run folder (no .hydra/config.yaml)")
    saved = OmegaConf.load(saved_path)
    kind, wanted = run_kind(saved), run_kind(cfg)
    if kind is not None and wanted is not None and kind != wanted:
        raise QuartetError(
            f"resume_dir={resume_dir}: a run folder of {kind}.py (its config has {KIND_KEYS[kind]!r}); "
            f"{wanted}.py can't continue it: resume it with `python {kind}.py resume_dir={resume_dir}`, "
            f"or give {wanted}.py a {wanted}.py run folder"
        )
    plain = []
    for o in task_overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key in ("resume_dir", "ckpt_path"):
            continue
        if "." not in key and key in CONFIG_GROUPS:
            raise ConfigError(
                [
                    f"{o}: config groups can't change on resume_dir; override keys instead (e.g. trainer.max_steps=...)"
                ]
            )
        plain.append(o.lstrip("+"))
    merged = OmegaConf.merge(saved, OmegaConf.from_dotlist(plain))
    with open_dict(merged):
        merged.resume_dir = str(resume_dir)
        merged.ckpt_path = cfg.get("ckpt_path") or "last"
    return merged


def check_folder_reuse(output_dir: Path, ckpt_path: str | None, resume_dir: str | None) -> None:
    """Refuse to start a fresh run in a folder that already holds one (``summary.json`` of a finished
    run, or ``checkpoints/last.ckpt`` of an unfinished one): its summary, CSV and checkpoints would be
    mixed with the new run's. Continuing it (``ckpt_path``/``resume_dir``) is fine."""
    if ckpt_path or resume_dir or _slurm_requeue_resumes(output_dir):
        return
    summary = output_dir / "summary.json"
    if summary.exists():
        status = "a finished"
        with contextlib.suppress(ValueError, OSError, AttributeError):
            status = {"interrupted": "an interrupted", "stopped_nonfinite": "a stopped"}.get(
                json.loads(summary.read_text()).get("status"), "a finished"
            )
        held = f"{status} run (summary.json)"
    elif (output_dir / "checkpoints" / "last.ckpt").exists():
        held = "an unfinished run (checkpoints/last.ckpt)"
    else:
        return
    raise QuartetError(
        f"run folder {output_dir} already holds {held}; pass ckpt_path=last to continue it, "
        f"resume_dir={output_dir} to continue it with its saved config, or use a new folder (hydra.run.dir=...)"
    )


def _slurm_requeue_resumes(output_dir: Path) -> bool:
    """A requeued SLURM job: Lightning resumes it from its ``hpc_ckpt_*.ckpt`` by itself."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect() and any(output_dir.glob("hpc_ckpt_*.ckpt"))


def shown_path(path: str | os.PathLike[str], cwd: str | None = None) -> str:
    """``path`` relative to the working folder when it lies inside it, else as it is."""
    rel = os.path.relpath(path, cwd or os.getcwd())
    return str(path) if rel == ".." or rel.startswith(".." + os.sep) else rel


def folder_closing_line(
    output_dir: str | os.PathLike[str],
    seconds: float,
    metric: tuple[str, float] | None = None,
    cwd: str | None = None,
    most: int = 4,
) -> str:
    """The line an eval or generate run ends with, as train.py's: the time, the headline metric, and the
    run folder with what it holds (hidden entries and logs left out; at most ``most`` names)."""
    folder = Path(output_dir)
    names = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in folder.iterdir()
        if not p.name.startswith(".") and p.suffix != ".log"
    ) if folder.is_dir() else []  # fmt: skip
    shown = ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")
    parts = [f"done in {seconds:.1f} s"]
    if metric is not None:
        parts.append(f"{metric[0]} {metric[1]:.4g}")
    parts.append(f"run folder {shown_path(folder, cwd)}/" + (f" ({shown})" if shown else ""))
    return "; ".join(parts)
