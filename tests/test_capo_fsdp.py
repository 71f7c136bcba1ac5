"""CaPO under FSDP2 on 2 CPU processes (a subprocess of train.py; never inside pytest): the policy and
the frozen reference both sharded, and the precomputed pre-pass run sharded on both ranks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers import run_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["copy", "precomputed"])
def test_capo_trains_under_fsdp(tmp_path: Path, reference: str):
    out = tmp_path / "run"
    pairs = tmp_path / "pairs.jsonl"  # a slice of the bundled pairs keeps the pre-pass short
    pairs.write_text("".join((ROOT / "data" / "capo" / "pairs.jsonl").read_text().splitlines(True)[:96]))
    args = [
        "experiment=capo_tiny",
        "trainer=fsdp",
        "trainer.devices=2",
        "debug=default",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "print_config=false",
        f"module.reference={reference}",
        f"data.path={pairs}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={out}",
    ]
    proc = run_script("train.py", args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 2
    # Policy == reference at step 0 on every rank (rank 0's loss is reported).
    assert abs(summary["first_step_loss"] - math.log(2)) < 1e-5
    assert math.isfinite(summary["last_step_loss"])
    ckpt = out / "checkpoints" / "last.ckpt"
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2  # sharded over the 2 ranks
    meta = torch.load(ckpt / "meta.pt", map_location="cpu", weights_only=True)
    # The epoch's per-type accuracy tally so far, summed over the ranks: 2 steps x 4 pairs x 2 ranks.
    assert meta["capo_train_tally"]["counts"].sum().item() == 16
    if reference == "precomputed":
        assert len(list((tmp_path / "cache").glob("capo-ref-*.pt"))) == 2  # train + val, written once
        cols = meta["capo_reference_logps"]["columns"]["train"]
        assert (cols["ref_chosen_logps"] < 0).all() and (cols["ref_rejected_logps"] < 0).all()
    else:
        assert "capo_reference_logps" not in meta
    assert (out / "hf_model" / "config.json").exists()
