"""Consolidate a training checkpoint into an ``hf_model/`` folder (``save_pretrained`` model + tokenizer).

A sharded checkpoint (``trainer=fsdp``: a folder of ``.distcp`` shards, ``.metadata`` and Lightning's
``meta.pt``) is read in one process with ``torch.distributed.checkpoint`` (only the ``state_dict``
entry: optimizer states are skipped); a single-file checkpoint (``trainer=cpu|gpu|ddp``) with
``torch.load``. The model is rebuilt from the ``model`` config saved in the checkpoint's
hyper-parameters, loaded with the policy's weights (``model.*``; a frozen reference copy
``ref_model.*`` is left out), and written by the same code as the end-of-fit export
(:func:`lightning_modules.causal_lm.write_hf_folder`: LoRA merged, MoE modeling code), so the folder
equals the run's own ``hf_model/`` bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightning_modules.causal_lm import CausalLMModule, write_hf_folder_atomic
from utils.errors import QuartetError, first_line

META_FILE = "meta.pt"  # Lightning's non-tensor part of a sharded checkpoint
POLICY_PREFIX = "model."


def is_sharded_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / ".metadata").is_file() and (path / META_FILE).is_file()


def load_sharded(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(full model state dict, hyper-parameters)`` of a sharded checkpoint folder."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    loaded: dict[str, Any] = {}
    _load_state_dict(
        loaded,
        storage_reader=FileSystemReader(str(path)),
        planner=_EmptyStateDictLoadPlanner(keys={"state_dict"}),
        no_dist=True,
    )
    meta = torch.load(path / META_FILE, map_location="cpu", weights_only=True)
    return loaded["state_dict"], meta.get("hyper_parameters") or {}


def load_single_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["state_dict"], ckpt.get("hyper_parameters") or {}


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model state dict and hyper-parameters of a Lightning checkpoint (sharded folder or file);
    a ``QuartetError`` naming the path when it is neither or does not read."""
    if not path.exists():
        raise QuartetError(f"{path}: no such checkpoint")
    if path.is_dir() and not is_sharded_checkpoint(path):
        raise QuartetError(
            f"{path}: not a sharded checkpoint folder (it needs .metadata and {META_FILE}, as trainer=fsdp "
            "writes them under <run>/checkpoints/)"
        )
    try:
        state, hparams = load_sharded(path) if path.is_dir() else load_single_file(path)
    except Exception as e:  # a truncated shard, a non-checkpoint file, ...
        raise QuartetError(f"{path}: not a readable checkpoint ({first_line(e)})") from None
    if not isinstance(hparams, dict) or "model" not in hparams:
        raise QuartetError(f"{path}: the checkpoint has no model config in its hyper-parameters")
    return state, hparams


def policy_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The policy's weights (``model.*`` of the LightningModule), keys relative to the HF model."""
    return {k[len(POLICY_PREFIX) :]: v for k, v in state.items() if k.startswith(POLICY_PREFIX)}


def default_out_dir(ckpt: Path) -> Path:
    """``<run>/hf_model`` for ``<run>/checkpoints/last.ckpt``, ``<run>/hf_model-<name>`` for another."""
    run = ckpt.resolve().parent.parent
    return run / "hf_model" if ckpt.name == "last.ckpt" else run / f"hf_model-{Path(ckpt.name).stem}"


def consolidate(ckpt: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the checkpoint's model as an ``hf_model/`` folder; return the folder."""
    ckpt = Path(ckpt)
    out_dir = Path(out) if out else default_out_dir(ckpt)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise QuartetError(
            f"--out {out_dir} already exists and is not empty (pass --overwrite to replace it)"
        )
    state, hparams = read_checkpoint(ckpt)
    module = CausalLMModule(
        model=hparams["model"], optimizer=hparams.get("optimizer") or {}, scheduler=None, compile=False
    )
    module.configure_model()  # builds the tokenizer and the model (LoRA included) from the saved config
    weights = policy_state(state)
    expected = set(module.model.state_dict())
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise QuartetError(
            f"{ckpt}: its weights do not fit the model its config builds "
            f"(missing: {missing[:3]}, unexpected: {extra[:3]})"
        )
    return write_hf_folder_atomic(module.model, weights, module.tokenizer, out_dir)
