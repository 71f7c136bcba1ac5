"""CaPO under FSDP2 on 2 CPU processes (subprocesses of train.py; never inside pytest), in every
reference mode: ``copy`` (the frozen copy sharded like the policy and saved in the checkpoint),
``precomputed`` (the pre-pass run sharded on both ranks; the values travel in the checkpoint) and
``adapter_off`` (a LoRA policy under ``fully_shard``). Each trains 4 steps, then a copy of its folder
resumes from the step-2 sharded checkpoint and must export the same weights, bit for bit; the final
sharded checkpoint consolidates into the same ``hf_model/``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from tests.fsdp_helpers import (
    assert_consolidated_equals_export,
    assert_same_export,
    sharded_checkpoint,
    summary,
    train_then_resume_from_copy,
)

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "copy": [],
    "precomputed": [],
    "adapter_off": ["model.lora.enabled=true", "model.lora.r=4"],
}


@pytest.mark.slow
@pytest.mark.parametrize("reference", list(MODES))
def test_capo_under_fsdp_resumes_exactly_from_sharded_checkpoint(tmp_path: Path, reference: str):
    pairs = tmp_path / "pairs.jsonl"  # a slice of the bundled pairs keeps the runs (and pre-pass) short
    pairs.write_text("".join((ROOT / "data" / "capo" / "pairs.jsonl").read_text().splitlines(True)[:48]))
    args = [
        "experiment=capo_tiny",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "trainer=fsdp",
        "trainer.devices=2",
        "debug=default",
        "trainer.max_steps=4",
        "trainer.limit_val_batches=0",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "print_config=false",
        f"module.reference={reference}",
        *MODES[reference],
        f"data.path={pairs}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    full, resumed = train_then_resume_from_copy(tmp_path, args, step=2)
    # Policy == reference at step 0 on every rank (rank 0's loss is reported).
    assert abs(summary(full)["first_step_loss"] - math.log(2)) < 1e-5
    assert math.isfinite(summary(full)["last_step_loss"])
    weights = assert_same_export(full / "hf_model", resumed / "hf_model")
    assert not any("lora" in k for k in weights)  # the adapter is merged into the export

    ckpt = sharded_checkpoint(full, 2)
    keys = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    meta = torch.load(ckpt / "meta.pt", map_location="cpu", weights_only=True)
    has_ref_copy = any(k.startswith("state_dict.ref_model.") for k in keys)
    assert has_ref_copy == (reference == "copy")
    assert any("lora_A" in k for k in keys) == (reference == "adapter_off")
    # The epoch's per-type accuracy tally so far, summed over the ranks: 2 steps x 4 pairs x 2 ranks.
    assert meta["capo_train_tally"]["counts"].sum().item() == 16
    if reference == "precomputed":
        assert len(list((tmp_path / "cache").glob("capo-ref-*.pt"))) == 2  # train + val, written once
        cols = meta["capo_reference_logps"]["columns"]["train"]
        assert (cols["ref_chosen_logps"] < 0).all() and (cols["ref_rejected_logps"] < 0).all()
    else:
        assert "capo_reference_logps" not in meta
    # the policy alone (LoRA merged; the frozen copy left out) consolidates into the run's own export
    assert_consolidated_equals_export(full)
