"""scripts/gpu_check.py runs on the CPU at tiny sizes (``--cpu``), so the one-run GPU check cannot rot (#19)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from callbacks.throughput import batch_tokens

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batch_tokens_counts_non_padding_tokens():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert batch_tokens({"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": mask}) == 5
    assert batch_tokens({"input_ids": torch.zeros(1, 7, dtype=torch.long)}) == 7  # packed: no padding
    assert batch_tokens(["not", "a", "batch"]) == 0


@pytest.mark.slow
def test_cpu_mode_runs_every_module_and_writes_one_report(tmp_path, capsys):
    report = load_gpu_check().main(["--cpu", "--no-bench", "--out", str(tmp_path), "--steps", "3"])
    names = [r["name"].split("+")[0] for r in report["runs"]]
    assert {"sft", "capo", "rlmec", "topp_moe"} <= set(names)
    for run in report["runs"]:
        assert run["status"] == "ok", run
        assert run["steps"] == 3 and run["timed_steps"] == 2 and run["tokens_per_s"] > 0
        assert run["peak_memory_gib"] > 0 and run["mfu"] is None  # no peak FLOP/s are known for a CPU
    capo = next(r for r in report["runs"] if r["name"] == "capo")
    assert math.isclose(capo["loss_first"], math.log(2), abs_tol=1e-3)  # policy == reference at step 0
    saved = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    assert saved["runs"] == report["runs"] and saved["environment"]["device"] == "cpu"
    screen = capsys.readouterr().out
    assert all(f"\n{r['name']:<22} ok" in screen for r in report["runs"]), screen
