"""Reference-model handling for methods that score responses against a frozen π_ref (CaPO/DPO, RLMEC).

Three modes (``module.reference``):

- ``copy``: a frozen deep copy of the policy, made right after the policy is built and before FSDP
  sharding, so it equals the policy at step 0; sharded like the policy under ``trainer=fsdp``. Costs
  a second set of weights (and is saved in checkpoints, so a resume is exact).
- ``precomputed``: a pre-pass scores the train/val data once with the initial policy (before any
  update, all ranks taking part under FSDP), caches the values on disk keyed by the data and a
  fingerprint of the initial weights, and adds them to the dataset as columns. No second model during
  training. The values are also stored in checkpoints.
- ``adapter_off``: the policy is a LoRA (peft) model; the reference is the same network with the
  adapter disabled. No second model, but a second forward per step.

Everything here is model-agnostic: a method supplies the scoring function (what to compute per
example) and the column names. :func:`frozen_token_logprobs` is the one way a frozen model (the
reference, the initial policy in a pre-pass, a GRM or policy scored offline by a stage) is scored.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from algorithms.logprobs import TokenLogprobs, batch_token_logprobs
from utils.atomic import atomic_path

REFERENCE_MODES = ("copy", "precomputed", "adapter_off")


def reference_config_problems(mode: str, model_cfg: Mapping[str, Any]) -> list[str]:
    """Problems with a ``module.reference`` choice for a given ``model`` config (empty when fine)."""
    if mode not in REFERENCE_MODES:
        return [f"module.reference={mode!r} must be one of {', '.join(REFERENCE_MODES)}"]
    lora = (model_cfg or {}).get("lora") or {}
    if mode == "adapter_off" and not lora.get("enabled"):
        return [
            "module.reference=adapter_off needs a LoRA policy (set model.lora.enabled=true), "
            "or use module.reference=copy or precomputed"
        ]
    return []


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under a ``torch.compile`` wrapper."""
    return getattr(model, "_orig_mod", model)


def is_peft_model(model: torch.nn.Module) -> bool:
    m = unwrap(model)
    return hasattr(m, "peft_config") and hasattr(m, "disable_adapter")


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy with no gradients, in eval mode. A peft policy's copy has its adapter merged away
    (a fresh LoRA adapter is a no-op, so the copy is the base model, and cheaper to run)."""
    ref = copy.deepcopy(unwrap(model))
    if is_peft_model(ref):
        ref = ref.merge_and_unload()
    ref.requires_grad_(False)
    return ref.eval()


@contextlib.contextmanager
def adapter_disabled(model: torch.nn.Module) -> Iterator[None]:
    """Run a peft model as its base model (adapter off) inside the block."""
    m = unwrap(model)
    if not is_peft_model(m):
        raise TypeError("adapter_disabled needs a peft (LoRA) model")
    with m.disable_adapter():
        yield


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode inside the block (dropout off), then back to the previous mode."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


@torch.no_grad()
def frozen_batch_logprobs(
    model: torch.nn.Module,
    batch: dict[str, Any],
    adapter_off: bool = False,
    impl: str = "chunked",
    chunk_tokens: int | None = None,
) -> TokenLogprobs:
    """log π(y_t | x, y_<t) of a collated batch's labelled tokens (padded or packed) under a frozen
    model: no grad, eval mode (dropout off) for the call, the LoRA adapter disabled when
    ``adapter_off`` and the model is a peft model. Returns
    :func:`~algorithms.logprobs.batch_token_logprobs`' grid. Used by CaPO and RLMEC (π_ref), their
    precomputed pre-passes, and the RLMEC stages' teacher forcing (:func:`frozen_token_logprobs`)."""
    off = adapter_disabled(model) if adapter_off and is_peft_model(model) else contextlib.nullcontext()
    with off, eval_mode(model):
        return batch_token_logprobs(model, batch, impl, chunk_tokens)


def frozen_token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    adapter_off: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`frozen_batch_logprobs` of a padded batch given as tensors: ``(logp [B, T-1], mask [B, T-1])``."""
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    out = frozen_batch_logprobs(model, batch, adapter_off)
    return out.logp, out.mask


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0 (``nn.Dropout`` modules and float ``*dropout`` attributes
    that attention implementations read), so the policy's log-probs are deterministic as in the
    reference's."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
        for name in ("attention_dropout", "dropout", "attn_dropout"):
            if isinstance(getattr(m, name, None), float):
                setattr(m, name, 0.0)


def weights_fingerprint(model: torch.nn.Module, samples: int = 256) -> str:
    """A short hash of a model's parameter names, shapes, dtypes and a strided sample of each
    tensor's values. Call it on unsharded weights (before FSDP); meta tensors hash by shape only."""
    h = hashlib.sha256()
    for name, p in unwrap(model).named_parameters():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        if p.device.type == "meta" or p.numel() == 0:
            continue
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // samples)][:samples].float().cpu()
        h.update(sample.numpy().tobytes())
        h.update(repr(float(flat.sum(dtype=torch.float64))).encode())
    return h.hexdigest()[:16]


# ---- precomputed values ------------------------------------------------------------------------------
ScoreFn = Callable[[dict[str, Any]], dict[str, torch.Tensor]]


@torch.no_grad()
def precompute(
    score: ScoreFn,
    loader: Any,
    num_examples: int,
    to_device: Callable[[dict[str, Any]], dict[str, Any]] = lambda b: b,
) -> dict[str, torch.Tensor]:
    """Run ``score`` over every batch of ``loader`` and return one tensor per column, in dataset order.

    ``loader`` must iterate its dataset in a fixed order through a sampler with an ``order(epoch)``
    method (``ResumableSampler(shuffle=False)``, sharded by rank). ``score(batch)`` returns a dict of
    per-example tensors [b, ...]. Under torch.distributed every rank runs the same number of batches
    (the sampler pads), which FSDP needs, and the results are gathered onto every rank.
    """
    indices = list(loader.sampler.order(0))
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        for name, values in score(to_device(batch)).items():
            parts.setdefault(name, []).append(values.detach().float().cpu())
    local = {name: torch.cat(chunks) for name, chunks in parts.items()}
    for name, values in local.items():
        if len(values) != len(indices):
            raise RuntimeError(f"precompute: {len(values)} values of {name!r} for {len(indices)} examples")
    gathered = [(indices, local)]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered = [None] * torch.distributed.get_world_size()  # type: ignore[list-item]
        torch.distributed.all_gather_object(gathered, (indices, local))
    out: dict[str, torch.Tensor] = {}
    filled = torch.zeros(num_examples, dtype=torch.bool)
    for idx, cols in gathered:
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        for name, values in cols.items():
            if name not in out:
                out[name] = torch.zeros((num_examples, *values.shape[1:]), dtype=values.dtype)
            out[name][idx_t] = values
        filled[idx_t] = True
    if not bool(filled.all()):
        raise RuntimeError(f"precompute: {int((~filled).sum())} of {num_examples} examples were not scored")
    return out


def cache_path(cache_dir: str | os.PathLike[str] | None, prefix: str, key: str) -> Path | None:
    return Path(cache_dir) / f"{prefix}-{key}.pt" if cache_dir else None


def load_cached(path: Path | None, key: str) -> dict[str, torch.Tensor] | None:
    """The cached columns at ``path`` when it exists and was written for ``key``."""
    if path is None or not path.is_file():
        return None
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["columns"] if obj.get("key") == key else None


def save_cached(path: Path | None, key: str, columns: Mapping[str, torch.Tensor]) -> None:
    """Write the columns atomically (a temporary file and a rename)."""
    if path is None:
        return
    with atomic_path(path) as tmp:
        torch.save({"key": key, "columns": dict(columns)}, tmp)
