"""Check a resume checkpoint before anything is written: readable, and of the model's shape.

Lightning finds a truncated file or a model of another size only deep inside ``trainer.fit``, after
the loggers have made their folders, and reports it as a traceback (or as 20 lines of "size
mismatch"). ``check_checkpoint_file`` and ``check_checkpoint_fits`` say it in one line instead:
which file, what is wrong, the first tensor that does not fit and the config keys that changed.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lightning_modules.causal_lm import MODULE_KEY
from utils.errors import QuartetError, first_line

META_FILE = "meta.pt"  # Lightning's non-tensor part of a sharded checkpoint (trainer=fsdp)


def check_checkpoint_file(ckpt_path: str | None, module_target: str | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``ckpt_path`` (memory-mapped, ``weights_only``), or ``None`` for a sharded
    folder or no checkpoint. Raises ``QuartetError`` naming the file when it is truncated or corrupt,
    holds objects ``weights_only`` refuses, or was written by another module than ``module_target``."""
    if not ckpt_path:
        return None
    p = Path(ckpt_path)
    if p.is_dir():
        _check_sharded_folder(p)
        meta = _load_weights_only(p / META_FILE, p) if (p / META_FILE).is_file() else {}
        check_checkpoint_module(p, meta, module_target)
        return None
    if p.stat().st_size == 0:
        raise QuartetError(f"ckpt_path={p}: the checkpoint file is empty (truncated)")
    try:
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()  # CRC of every member: finds truncated and overwritten bytes
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise QuartetError(f"ckpt_path={p}: corrupt or truncated checkpoint ({first_line(e)})") from None
    if bad is not None:
        raise QuartetError(f"ckpt_path={p}: corrupt checkpoint (member {bad} fails its CRC check)")
    ckpt = _load_weights_only(p, p)
    if not isinstance(ckpt.get("state_dict"), Mapping):
        raise QuartetError(f"ckpt_path={p}: not a Lightning checkpoint (no state_dict)")
    check_checkpoint_module(p, ckpt, module_target)
    return ckpt


def _load_weights_only(file: Path, ckpt_path: Path) -> dict[str, Any]:
    """``torch.load(file, weights_only=True)`` (memory-mapped); every failure, a pickle payload
    included, is a ``QuartetError`` naming ``ckpt_path`` (and ``file`` when it is a part of it)."""
    where = str(ckpt_path) if file == ckpt_path else f"{ckpt_path} ({file.name})"
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise QuartetError(
                f"ckpt_path={where}: the checkpoint holds objects that weights_only loading refuses "
                f"({first_line(e)})"
            ) from None
        raise QuartetError(f"ckpt_path={where}: corrupt checkpoint ({first_line(e)})") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise QuartetError(f"ckpt_path={where}: corrupt or truncated checkpoint ({first_line(e)})") from None
    if not isinstance(ckpt, dict):
        raise QuartetError(f"ckpt_path={where}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def check_checkpoint_module(ckpt_path: Path, ckpt: Mapping[str, Any], module_target: str | None) -> None:
    """Raise ``QuartetError`` when the checkpoint was written by another LightningModule class than
    ``module_target`` (``cfg.module._target_``): its weights and state would not load (a CaPO
    checkpoint holds a reference copy an SFT module has no place for). Classes are compared by name, so
    a module moved to another package still matches; checkpoints without the record pass."""
    saved = ckpt.get(MODULE_KEY)
    if not isinstance(saved, str) or not module_target:
        return
    name, wanted = saved.rsplit(".", 1)[-1], str(module_target).rsplit(".", 1)[-1]
    if name != wanted:
        raise QuartetError(
            f"ckpt_path={ckpt_path}: a checkpoint of {name} ({saved}), but this run's module is {wanted} "
            f"({module_target}); a checkpoint resumes only the module that wrote it: choose that module, "
            "or start from its weights with model=hf model.pretrained=<its run>/hf_model"
        )


def _check_sharded_folder(p: Path) -> None:
    """A sharded (distributed checkpoint) folder: its ``.metadata`` reads and every shard file holds
    the bytes the metadata points at."""
    from torch.distributed.checkpoint import FileSystemReader

    if not (p / ".metadata").is_file():
        raise QuartetError(
            f"ckpt_path={p}: a folder that is not a sharded checkpoint (no .metadata); pass a .ckpt file "
            "or a checkpoint folder written under trainer=fsdp"
        )
    try:
        metadata = FileSystemReader(str(p)).read_metadata()
    except Exception as e:  # noqa: BLE001 - any unreadable metadata is a corrupt checkpoint
        raise QuartetError(
            f"ckpt_path={p}: corrupt sharded checkpoint: .metadata ({first_line(e)})"
        ) from None
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        end = int(info.offset) + int(info.length)
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, end in sorted(needed.items()):
        shard = p / name
        if not shard.is_file():
            raise QuartetError(f"ckpt_path={p}: corrupt sharded checkpoint: shard {name} is missing")
        if shard.stat().st_size < end:
            raise QuartetError(
                f"ckpt_path={p}: truncated sharded checkpoint: shard {name} has {shard.stat().st_size} "
                f"bytes, its metadata needs {end}"
            )


def _flatten(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str) -> list[str]:
    """``key: old -> new`` for every leaf that differs (keys only on one side shown as ``<unset>``)."""
    a, b = _flatten(saved, prefix), _flatten(current, prefix)
    out = []
    for key in sorted(a.keys() | b.keys()):
        old, new = a.get(key, "<unset>"), b.get(key, "<unset>")
        if old != new:
            out.append(f"{key}: {old} -> {new}")
    return out


def _expected_model_shapes(model_cfg: Mapping[str, Any]) -> dict[str, torch.Size] | None:
    """Parameter shapes of the model ``model_cfg`` builds (on the meta device: no memory, no weights),
    keyed as in a module's state dict (``model.<name>``); ``None`` for kinds that load weights."""
    from models import build_model, get_model_kind, load_tokenizer

    if not get_model_kind(model_cfg.get("kind", "hf")).built_from_config:
        return None
    tokenizer = load_tokenizer(
        model_cfg["tokenizer"],
        bool(model_cfg.get("trust_remote_code", False)),
        model_cfg.get("chat_template"),
    )
    with torch.device("meta"):
        model = build_model(model_cfg, tokenizer)
    return {f"model.{k}": v.shape for k, v in model.state_dict().items()}


def first_mismatch(saved: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size]) -> str | None:
    """The first tensor (in checkpoint order) whose shape differs, else the first one that is only on
    one side; ``None`` when the model part of ``saved`` fits ``expected``."""
    saved_model = {k: v for k, v in saved.items() if k.startswith("model.")}
    for name, tensor in saved_model.items():
        if name in expected and tuple(tensor.shape) != tuple(expected[name]):
            return f"{name} is {list(tensor.shape)} in the checkpoint but {list(expected[name])} in the model"
    for name in saved_model:
        if name not in expected:
            return f"{name} is in the checkpoint but not in the model"
    for name in expected:
        if name not in saved_model:
            return f"{name} is in the model but not in the checkpoint"
    return None


def check_checkpoint_fits(ckpt_path: str, ckpt: Mapping[str, Any], model_cfg: Any) -> None:
    """Raise ``QuartetError`` when the checkpoint's model does not have the shape of the model that
    ``model_cfg`` (the module's ``model`` config) builds, naming the first mismatched tensor and the
    ``model.*`` keys that differ from the config saved in the checkpoint (its ``hyper_parameters``)."""
    saved_model_cfg = (ckpt.get("hyper_parameters") or {}).get("model")
    current_model_cfg = (
        OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else model_cfg
    )
    if not isinstance(saved_model_cfg, Mapping) or not isinstance(current_model_cfg, Mapping):
        return
    if saved_model_cfg == current_model_cfg:  # same model config: same shapes (the common resume)
        return
    try:
        expected = _expected_model_shapes(current_model_cfg)
    except QuartetError:
        raise
    except Exception:  # noqa: BLE001 - no early check possible; Lightning's own load still runs
        return
    if expected is None:
        return
    mismatch = first_mismatch(ckpt["state_dict"], expected)
    if mismatch is None:
        return
    changed = config_diff(saved_model_cfg, current_model_cfg, "model")
    changes = "; ".join(changed) if changed else "none found"
    raise QuartetError(
        f"ckpt_path={ckpt_path}: the checkpoint does not fit the model: {mismatch} "
        f"(config changed since the checkpoint: {changes})"
    )
