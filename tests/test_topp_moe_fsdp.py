"""The Top-P MoE under FSDP2 on 2 CPU processes (gloo), as subprocesses of train.py: experts are sharded
with their decoder block, val routing statistics are reduced over both ranks, and a resume from the
sharded checkpoint continues exactly (weights and heatmap), and the checkpoint consolidates into an
``hf_model/`` equal to the run's own export."""

from __future__ import annotations

import json

import pytest

from tests.fsdp_helpers import (
    assert_consolidated_equals_export,
    assert_same_export,
    sharded_checkpoint,
    summary,
    train_then_resume_from_copy,
)

ARGS = [
    "experiment=moe_tiny_topp",
    "debug=default",
    "trainer=fsdp",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=1",
    "logger=csv",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "+callbacks.moe_heatmap._target_=callbacks.moe_heatmap.MoEHeatmap",
]
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_fsdp_moe_shards_experts_resumes_exactly_and_consolidates(tmp_path):
    heatmap = "+callbacks.moe_heatmap.path=${paths.output_dir}/moe_experts_heatmap.png"
    full, resumed = train_then_resume_from_copy(tmp_path, [*ARGS, heatmap], step=2, env=ENV)
    m = summary(full)["metrics"]
    assert summary(full)["global_step"] == 4 and m["moe/experts_per_token"] >= 1
    # Val statistics are summed over both ranks: one batch of 4 × 128 tokens each.
    for i in range(4):
        pairs = sum(m[f"val/moe/layer{i}/tokens_per_expert/e{e}"] for e in range(8))
        assert pairs == pytest.approx(m[f"val/moe/layer{i}/experts_per_token"] * 2 * 4 * 128, rel=1e-5)

    # Each expert weight is split across the two ranks along the expert dimension (4 + 4 of 8 experts).
    from torch.distributed.checkpoint import FileSystemReader

    sharded = sharded_checkpoint(full, 2)
    meta = FileSystemReader(str(sharded)).read_metadata().state_dict_metadata
    key = next(k for k in meta if k.endswith("layers.1.mlp.experts.gate_up_proj"))
    chunks = sorted((tuple(c.offsets), tuple(c.sizes)) for c in meta[key].chunks)
    assert chunks == [((0, 0, 0), (4, 512, 128)), ((4, 0, 0), (4, 512, 128))], chunks

    weights = assert_same_export(full / "hf_model", resumed / "hf_model")
    assert any("experts.gate_up_proj" in k for k in weights)
    heat_a = json.loads((full / "moe_experts_heatmap.json").read_text())
    heat_b = json.loads((resumed / "moe_experts_heatmap.json").read_text())
    assert heat_a == heat_b and heat_a["steps"] == [1, 2, 3, 4]
    assert_consolidated_equals_export(full, trust_remote_code=True)
