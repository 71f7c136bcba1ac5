"""Padding-free ("packed") batches: every row of a padded batch laid end to end in one sequence.

A padded batch ``{input_ids, attention_mask, labels: [R, T], ...}`` becomes

- ``input_ids``, ``labels``, ``position_ids``: ``[1, N]``, N = Σ row lengths (no padding at all);
  ``labels`` is -100 on each row's first token, so no row predicts the next row's first token, and
  ``position_ids`` restart at 0 on each row;
- ``cu_seq_lens_q``/``cu_seq_lens_k`` ``[R+1]`` (int32) and ``max_length_q``/``max_length_k``: the row
  boundaries, in the names transformers' flash-attention path reads;
- ``row_mask``: the padded batch's ``attention_mask`` ``[R, T]`` (bool), kept to put per-token results back
  on the ``[R, T]`` grid (:func:`unpack_tokens`), so every loss keeps its padded shapes;
- every other field (per-row scalars, per-token grids of floats) unchanged.

The flattening itself is transformers' ``DataCollatorWithFlattening`` (the layout its flash-attention
path and TRL's ``padding_free`` expect). Attention never crosses rows: with ``attention_mask=None`` and
restarting ``position_ids``, transformers' mask builder detects the packed rows and makes the causal mask
block-diagonal (SDPA, eager and flex attention), and flash attention runs its variable-length kernel
on ``cu_seq_lens`` (``flash_attention_2/3``, the GPU path). A model on transformers' ``sdpa`` is switched
to ``sdpa_varlen`` (``algorithms/varlen_attention.py``) on its first packed batch: SDPA row by row,
Σ L_i² work instead of the block-diagonal mask's N² (the CPU choice; ``bench/packing.py`` measures both).

A module that consumes a batch calls :func:`model_inputs` for the forward's keyword arguments and
:func:`batch_rows` for the number of rows; ``algorithms.logprobs.batch_token_logprobs`` does both. An online
RL module (issue #18) packs its rollouts with ``pack_padded_batch(pad(rows))`` and scores them with
``batch_token_logprobs``: the log-probs come back on the padded grid.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorWithFlattening

from algorithms.varlen_attention import NAME as VARLEN_SDPA
from algorithms.varlen_attention import use_varlen_sdpa
from models.nll import IGNORE_INDEX

PACKED_KEYS = ("position_ids", "row_mask")
FLASH_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
_FLATTEN = DataCollatorWithFlattening(return_flash_attn_kwargs=True, separator_id=IGNORE_INDEX)


def is_packed(batch: dict[str, Any]) -> bool:
    return "row_mask" in batch


def batch_rows(batch: dict[str, Any]) -> int:
    """The number of sequences in a batch, packed or padded."""
    return int(batch["row_mask"].shape[0] if is_packed(batch) else batch["input_ids"].shape[0])


def pack_padded_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The packed form of a right-padded batch (see the module docstring); a pure function."""
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(-1).tolist()
    if min(lengths) < 1:
        raise ValueError("pack_padded_batch: a row has no token")
    rows = [
        {"input_ids": ids[:n].tolist(), "labels": lab[:n].tolist()}
        for ids, lab, n in zip(batch["input_ids"], batch["labels"], lengths)
    ]
    flat = _FLATTEN(rows, return_tensors="pt")
    out = {k: v for k, v in batch.items() if k not in ("input_ids", "labels", "attention_mask")}
    out.update(
        input_ids=flat["input_ids"],
        labels=flat["labels"],
        position_ids=flat["position_ids"],
        row_mask=mask,
        **{k: flat[k] for k in FLASH_KEYS},
    )
    return out


class PackingCollator:
    """Wraps a padding collator: collate as usual, then :func:`pack_padded_batch`. A class so that it
    pickles into dataloader workers."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return pack_padded_batch(self.inner(features))


def takes_row_bounds(model: torch.nn.Module) -> bool:
    """Whether the model's attention reads ``cu_seq_lens`` (flash attention's varlen kernel, ``sdpa_varlen``)."""
    impl = str(getattr(getattr(model, "config", None), "_attn_implementation", None) or "")
    return "flash" in impl or impl == VARLEN_SDPA


def model_inputs(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``model(...)``: ``input_ids`` and ``attention_mask`` of a padded batch; of a
    packed one ``input_ids``, ``position_ids`` and ``attention_mask=None`` (which is what makes
    transformers build the block-diagonal mask), plus the ``cu_seq_lens`` of the rows when the attention
    reads them (flash attention's varlen kernel; ``sdpa_varlen``, to which an ``sdpa`` model is switched
    here)."""
    if not is_packed(batch):
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    use_varlen_sdpa(model)
    out = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "attention_mask": None}
    if takes_row_bounds(model):
        out.update({k: batch[k] for k in FLASH_KEYS})
    return out


def unpack_tokens(values: torch.Tensor, row_mask: torch.Tensor) -> torch.Tensor:
    """Per-token values of a packed sequence (``[N]`` or ``[1, N]``) back on the padded ``[R, T]`` grid,
    0 on padding: ``values[j]`` goes to the j-th True entry of ``row_mask`` in row-major order (the rows
    were laid end to end in that order)."""
    flat = values.reshape(-1)
    out = torch.zeros(row_mask.shape, dtype=flat.dtype, device=flat.device)
    return out.masked_scatter(row_mask.to(flat.device), flat)


def unpack_shifted(values: torch.Tensor, row_mask: torch.Tensor) -> torch.Tensor:
    """Values indexed like the shifted labels of a packed sequence (``[N-1]``: entry j belongs to token
    j+1) as the ``[R, T-1]`` grid that a padded batch gives (entry ``[r, t]`` belongs to token t+1 of row
    r). Entries that sat across a row boundary land on each row's first token, which the grid drops."""
    flat = values.reshape(-1)
    per_token = torch.cat([flat.new_zeros(1), flat])
    return unpack_tokens(per_token, row_mask)[:, 1:]
