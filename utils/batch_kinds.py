"""Which batches a LightningModule consumes and a DataModule produces, checked at start-up.

Each DataModule class declares ``batch_kind`` (one name below) and each LightningModule class
``consumes`` (a tuple of names). ``train.py`` refuses a pair that does not fit before anything is
read or written, naming the data modules that do fit (found from ``conf/data/*.yaml``): without the
check, ``module=sft data=preference`` trains silently on the rejected (corrupted) answers too, and
``module=capo data=chat`` fails mid-fit with ``KeyError: 'neg_type'``.

Adding a kind of batch is one line in :data:`BATCH_KINDS`, plus the attribute on the classes that
make and use it. A class that declares nothing (a user's own ``_target_``) is not checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"

#: kind -> what such a batch holds (named in the error line).
BATCH_KINDS: dict[str, str] = {
    "tokens": "input_ids with per-token labels",
    "preference": "chosen and rejected answers with neg_type",
    "rlmec": "originals and rewrites with per-token rewards",
    "questions": "reasoning questions with gold answers, for eval.py",
    "reasoning_prompts": "chat prompts of reasoning questions with gold answers, for online RL",
}


def _class(target: Any) -> type | None:
    from hydra.utils import get_class

    try:
        return get_class(str(target))
    except Exception:  # noqa: BLE001 - an unimportable _target_ is reported by instantiate itself
        return None


def option_target(f: Path) -> str | None:
    """The ``_target_`` of a config option file, following its ``defaults`` in the same group
    (``data=ask`` is ``data=chat`` with other loss roles)."""
    node = OmegaConf.load(f)
    if node.get("_target_"):
        return str(node._target_)
    for entry in node.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_" and (f.parent / f"{entry}.yaml").is_file():
            return option_target(f.parent / f"{entry}.yaml")
    return None


def data_options_for(kinds: tuple[str, ...], conf_data: Path = CONF_DATA) -> list[str]:
    """``data=<option>`` for every ``conf/data/<option>.yaml`` whose DataModule makes one of ``kinds``."""
    out = []
    for f in sorted(conf_data.glob("*.yaml")):
        target = option_target(f)
        cls = _class(target) if target else None
        if cls is not None and getattr(cls, "batch_kind", None) in kinds:
            out.append(f"data={f.stem}")
    return out


def batch_kind_problem(module_cfg: DictConfig, data_cfg: DictConfig) -> str | None:
    """One line when ``module``'s class can't consume what ``data``'s class makes, else ``None``."""
    module_cls, data_cls = _class(module_cfg.get("_target_")), _class(data_cfg.get("_target_"))
    consumes = getattr(module_cls, "consumes", None)
    makes = getattr(data_cls, "batch_kind", None)
    if module_cls is None or data_cls is None or consumes is None or makes is None or makes in consumes:
        return None
    fits = data_options_for(tuple(consumes)) or ["none in conf/data/"]
    wanted = " or ".join(f"'{k}' batches ({BATCH_KINDS.get(k, k)})" for k in consumes)
    return (
        f"module {module_cls.__name__} trains on {wanted}, but data {data_cls.__name__} makes '{makes}' "
        f"batches ({BATCH_KINDS.get(makes, makes)}); data modules that fit: {', '.join(fits)}"
    )
