"""Print the composed config as a rich tree and save the same text in the run folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

PRINT_ORDER = ("data", "model", "module", "callbacks", "logger", "trainer", "paths", "experiment")


def config_tree(cfg: DictConfig, order: Sequence[str] = PRINT_ORDER) -> rich.tree.Tree:
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    return tree


def print_and_save_config(cfg: DictConfig, save_path: str | Path | None) -> None:
    """Print the config tree to the terminal and write it to ``save_path`` (plain text)."""
    tree = config_tree(cfg)
    rich.print(tree)
    if save_path is not None:
        Path(save_path).parent.mkdir(parents=True, exist_ok=True)
        with open(save_path, "w") as f:
            Console(file=f, width=120, color_system=None).print(tree)
