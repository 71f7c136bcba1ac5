"""The quick check of a user's own model: the ``debug=smoke`` config and ``scripts/check_model.sh``."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import ROOT, compose_cfg


@pytest.mark.parametrize(("module", "data"), [("sft", "chat"), ("sft", "ask"), ("capo", "preference")])
def test_smoke_debug_config_composes_for_each_pipeline(tmp_path, module, data):
    cfg = compose_cfg(
        ["model=hf", "model.pretrained=/models/m", "debug=smoke", f"module={module}", f"data={data}"],
        tmp_path,
    )
    t = cfg.trainer
    assert (t.max_steps, t.limit_val_batches, t.enable_checkpointing, cfg.export) == (2, 0, False, False)
    assert (cfg.data.max_length, cfg.data.batch_size, cfg.data.val_fraction) == (256, 2, 0)
    assert not cfg.callbacks and list(cfg.logger) == ["csv"] and cfg.run_name == "smoke"
    assert cfg.data.tokenizer == "/models/m"


@pytest.mark.slow
def test_check_model_script_runs_every_pipeline(tmp_path, tiny_hf_dir):
    out = tmp_path / "check"
    # A random model's greedy reply is often empty (EOS first), so the negatives step samples.
    neg_args = "stage.generator.sampling.temperature=1.0"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "QUARTET_ROOT": str(ROOT), "NEG_ARGS": neg_args}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_model.sh"), str(tiny_hf_dir), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.rstrip().endswith(f"all pipelines ran on {tiny_hf_dir}")
    for step in ("sft", "ask", "capo"):
        s = json.loads((out / step / "summary.json").read_text())
        assert s["global_step"] == 2 and s["hf_model"] is None and s["checkpoints"]["last"] is None, step
    pairs = (out / "negatives" / "pairs.jsonl").read_text().splitlines()
    assert len(pairs) >= 2 and f"  {len(pairs)} pairs" in proc.stdout
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["metrics"]) == {"greedy", "sc@2", "sa@2"} and results["settings"]["num_questions"] == 2
