"""Exact resume from a sharded FSDP2 checkpoint in two runs of ``train.py`` (2 CPU processes each):
an uninterrupted run that keeps its periodic checkpoints, then a resume from one of them in a copy of
its folder. The resumed run must export the same weights, bit for bit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.helpers import run_script

# Outputs the resumed run must write again itself (never inherited from the copied folder).
REWRITTEN = ("hf_model", "summary.json", "moe_experts_heatmap.*")


def sharded_checkpoint(run: Path, step: int) -> Path:
    """``<run>/checkpoints/step<step>.ckpt``, checked to be a sharded folder with one shard per rank."""
    ckpt = run / "checkpoints" / f"step{step:06d}.ckpt"
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2, f"{ckpt}: not 2 shards"
    assert not list(ckpt.parent.glob(".*.tmp-*")), "a temporary checkpoint folder was left behind"
    return ckpt


def train_then_resume_from_copy(
    tmp_path: Path, args: list[str], step: int = 2, env: dict | None = None
) -> tuple[Path, Path]:
    """Run ``train.py args`` to the end in ``tmp_path/full``, copy that folder to ``tmp_path/resumed``
    (without the outputs in ``REWRITTEN``) and continue the copy from its step-``step`` sharded
    checkpoint. Returns both run folders; both must exit 0 and the second must train the rest."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    first = run_script("train.py", [*args, f"hydra.run.dir={full}"], env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    sharded_checkpoint(full, step)
    shutil.copytree(full, resumed, ignore=shutil.ignore_patterns(*REWRITTEN))
    ckpt = resumed / "checkpoints" / f"step{step:06d}.ckpt"
    second = run_script("train.py", [*args, f"ckpt_path={ckpt}", f"hydra.run.dir={resumed}"], env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    a, b = summary(full), summary(resumed)
    assert b["global_step"] == a["global_step"] and b["steps_this_run"] == a["global_step"] - step
    # last.ckpt was rewritten in place (steps 2, then the final one): it holds the final step
    last = full / "checkpoints" / "last.ckpt"
    assert torch.load(last / "meta.pt", weights_only=True)["global_step"] == a["global_step"]
    return full, resumed


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def assert_same_export(a: Path, b: Path) -> dict[str, torch.Tensor]:
    """The ``hf_model/model.safetensors`` of two folders hold the same tensors, bit for bit."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        assert wa[k].dtype == wb[k].dtype and torch.equal(wa[k], wb[k]), f"{k} differs"
    return wa


def assert_consolidated_equals_export(run: Path, trust_remote_code: bool = False) -> Path:
    """``scripts/consolidate_checkpoint.py``'s conversion of ``<run>/checkpoints/last.ckpt`` equals the
    run's own ``hf_model/``: same tensors, same tokenizer, and bitwise equal logits once loaded back
    with ``transformers``. Returns the consolidated folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from checkpoints.consolidate import consolidate

    out = consolidate(run / "checkpoints" / "last.ckpt", run / "consolidated")
    assert_same_export(run / "hf_model", out)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (out / name).read_bytes() == (run / "hf_model" / name).read_bytes(), name
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    logits = []
    for folder in (run / "hf_model", out):
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust_remote_code).eval()
        with torch.no_grad():
            logits.append(model(ids).logits)
    assert torch.equal(logits[0], logits[1])
    return out
