"""Clear messages for model and tokenizer locations (``model.pretrained``, ``model.tokenizer``).

transformers answers a missing local folder with a message about repo ids, and a Quartet run folder
(which holds ``hf_model/`` inside it) with a cut-off tokenizer message. These checks run first and
name the actual problem.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from utils.errors import QuartetError, first_line

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name
RUN_FOLDER_MARKS = (".hydra/config.yaml", "summary.json", "checkpoints")


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id: starts with ``/``, ``.`` or ``~``, or has a path separator
    without the ``org/name`` shape of a hub id."""
    if name.startswith((os.sep, ".", "~")):
        return True
    seps = [s for s in (os.sep, os.altsep) if s]
    return any(s in name for s in seps) and not HUB_ID.match(name)


def is_run_folder(path: Path) -> bool:
    """A Quartet run folder (config, summary or checkpoints) that is not itself a model folder."""
    return not (path / "config.json").exists() and any((path / m).exists() for m in RUN_FOLDER_MARKS)


def check_model_location(name: str | os.PathLike | None, key: str = "model.pretrained") -> None:
    """Raise ``QuartetError`` when ``name`` is a local path that does not exist, or a run folder given
    where a model folder is expected. Hub ids and good folders pass."""
    if not name:
        return
    text = str(name)
    path = Path(text).expanduser()
    if looks_like_path(text) and not path.exists():
        raise QuartetError(f"{key}={text}: path does not exist")
    if path.is_dir() and is_run_folder(path):
        hint = "" if (path / "hf_model").is_dir() else " (this run has none yet: train it with export=true)"
        raise QuartetError(f"{key}={text}: this looks like a run folder; use {path / 'hf_model'}{hint}")
    if path.is_dir():
        check_pickled_weights(path, key)


def check_pickled_weights(folder: Path, key: str = "model.pretrained") -> None:
    """Load the ``pytorch_model*.bin`` files transformers would read (a folder without safetensors) as
    ``weights_only`` does, memory-mapped, so a pickle payload or a corrupt file is one line at start-up
    naming the file, not a traceback from inside ``from_pretrained``."""
    if any(folder.glob("*.safetensors")):
        return  # transformers reads these instead
    import pickle

    import torch

    for file in sorted(folder.glob("pytorch_model*.bin")):
        try:
            torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as e:
            refused = "weights only" in str(e).lower()
            what = "holds objects that weights_only loading refuses" if refused else "is corrupt"
            raise QuartetError(f"{key}={folder}: {file.name} {what} ({first_line(e)})") from None
        except (RuntimeError, OSError, EOFError, ValueError) as e:
            raise QuartetError(
                f"{key}={folder}: {file.name} is corrupt or truncated ({first_line(e)})"
            ) from None
