"""The Top-P MoE under FSDP2 on 2 CPU processes (gloo), as subprocesses of train.py: experts are sharded
with their decoder block, val routing statistics are reduced over both ranks, and a resume from the
sharded checkpoint continues exactly (weights and heatmap)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tests.helpers import run_script

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
CRASH = ["+callbacks.crash._target_=tests.helpers.CrashAtStep", "+callbacks.crash.step=2"]
ENV = {"OMP_NUM_THREADS": "1"}


def _run(run_dir, *extra):
    heatmap = f"+callbacks.moe_heatmap.path={run_dir}/moe_experts_heatmap.png"
    return run_script("train.py", [*ARGS, heatmap, f"hydra.run.dir={run_dir}", *extra], env=ENV)


@pytest.mark.slow
def test_fsdp_moe_shards_experts_and_resumes_exactly_from_sharded_checkpoint(tmp_path):
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    ok = _run(full)
    assert ok.returncode == 0, ok.stderr[-3000:]
    summary = json.loads((full / "summary.json").read_text())
    m = summary["metrics"]
    assert summary["global_step"] == 4 and m["moe/experts_per_token"] >= 1
    # Val statistics are summed over both ranks: one batch of 4 × 128 tokens each.
    for i in range(4):
        pairs = sum(m[f"val/moe/layer{i}/tokens_per_expert/e{e}"] for e in range(8))
        assert pairs == pytest.approx(m[f"val/moe/layer{i}/experts_per_token"] * 2 * 4 * 128, rel=1e-5)

    first = _run(crashed, *CRASH)
    assert first.returncode != 0 and "simulated crash" in first.stderr
    sharded = crashed / "checkpoints" / "step000002.ckpt"
    assert sharded.is_dir() and len(list(sharded.glob("*.distcp"))) == 2, "one shard per rank"
    # Each expert weight is split across the two ranks along the expert dimension (4 + 4 of 8 experts).
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(sharded)).read_metadata().state_dict_metadata
    key = next(k for k in meta if k.endswith("layers.1.mlp.experts.gate_up_proj"))
    chunks = sorted((tuple(c.offsets), tuple(c.sizes)) for c in meta[key].chunks)
    assert chunks == [((0, 0, 0), (4, 512, 128)), ((4, 0, 0), (4, 512, 128))], chunks

    resumed = _run(crashed, f"ckpt_path={sharded}", "+callbacks.crash.step=100")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((crashed / "summary.json").read_text())["global_step"] == 4
    a = load_file(full / "hf_model" / "model.safetensors")
    b = load_file(crashed / "hf_model" / "model.safetensors")
    assert a.keys() == b.keys() and any("experts.gate_up_proj" in k for k in a)
    for k in a:
        assert (a[k] == b[k]).all(), f"{k} differs after the sharded resume"
    heat_a = json.loads((full / "moe_experts_heatmap.json").read_text())
    heat_b = json.loads((crashed / "moe_experts_heatmap.json").read_text())
    assert heat_a == heat_b and heat_a["steps"] == [1, 2, 3, 4]
