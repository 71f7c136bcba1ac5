"""OmegaConf resolvers used by the Hydra configs (registered by the entry points before composing)."""

from __future__ import annotations

import time

from omegaconf import OmegaConf


def run_dir(resume_dir: str | None, default: str) -> str:
    """``hydra.run.dir``: the resumed folder when ``resume_dir`` is set, else the default."""
    return str(resume_dir) if resume_dir else default


def config_subdir(resume_dir: str | None) -> str:
    """``hydra.output_subdir``: ``.hydra`` normally; a new sub-folder when resuming, so the original
    ``.hydra/config.yaml`` (which the resume reads) is never overwritten."""
    return ".hydra" if not resume_dir else f".hydra/resume-{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def register_resolvers() -> None:
    for name, fn in (("quartet_run_dir", run_dir), ("quartet_config_subdir", config_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
