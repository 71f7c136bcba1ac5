"""An exported Quartet MoE ``hf_model/`` loads everywhere: with plain transformers and
``trust_remote_code=True`` in a Python that cannot import Quartet (same logits, bitwise), and through
Quartet's own loaders without ``trust_remote_code`` (``model=hf``, the HF backend, eval.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import FAST, compose_cfg
from train import train

ROOT = Path(__file__).resolve().parents[1]
TOKENS = [[5, 17, 3, 42, 8, 9, 23, 1, 11, 30]]
# Runs in `python -I` (no PYTHONPATH, no user site, no script folder) from a folder outside the repo.
CLEAN_LOAD = """
import sys, torch
torch.set_num_threads(1)  # as the test process (tests/conftest.py): bitwise equality needs the same reductions
# `pip install -e .` (what make does) puts Quartet on every path of the venv through a meta-path
# finder; a user's environment has no Quartet at all, so take it away here.
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
try:
    import models  # noqa: F401
    sys.exit("Quartet is importable: the check would prove nothing")
except ImportError:
    pass
from transformers import AutoModelForCausalLM
folder, tokens, out = sys.argv[1], sys.argv[2], sys.argv[3]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(torch.tensor(eval(tokens))).logits
torch.save({"logits": logits, "cls": type(model).__module__ + "." + type(model).__name__}, out)
"""


@pytest.fixture(scope="module")
def moe_export(tmp_path_factory):
    """hf_model/ of a 2-step tiny Top-P MoE run (small sizes), exported by the training run itself."""
    out = tmp_path_factory.mktemp("moe_export")
    cfg = compose_cfg(
        [
            "experiment=moe_tiny_topp",
            "debug=default",
            "logger=none",
            "model.hidden_size=32",
            "model.num_layers=2",
            "model.num_heads=2",
            "model.num_kv_heads=1",
            "model.moe_intermediate_size=32",
            "model.num_experts=4",
            "data.block_size=32",
            *FAST,
        ],
        out,
    )
    train(cfg)
    return out / "hf_model"


def quartet_logits(folder) -> torch.Tensor:
    from models import build_model

    model = build_model({"kind": "hf", "pretrained": str(folder), "dtype": "float32"}).eval()
    assert type(model).__module__ == "models.quartet_moe.modeling_quartet_moe"
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits


def test_export_writes_auto_map_and_flat_modeling_files(moe_export):
    config = json.loads((moe_export / "config.json").read_text())
    assert config["model_type"] == "quartet_topp_moe"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_quartet_moe.QuartetMoEConfig",
        "AutoModel": "modeling_quartet_moe.QuartetMoEModel",
        "AutoModelForCausalLM": "modeling_quartet_moe.QuartetMoEForCausalLM",
    }
    modeling = (moe_export / "modeling_quartet_moe.py").read_text()
    assert "from .layer import MoEAux, MoELayer" in modeling and "from .nll import" in modeling
    modules = (
        "configuration_quartet_moe",
        "modeling_quartet_moe",
        "layer",
        "router",
        "dispatch",
        "nll",
        "cpu_linear",
    )
    for name in modules:
        imports = re.findall(
            r"^\s*(?:from\s+(\S+)\s+import|import\s+(\S+))", (moe_export / f"{name}.py").read_text(), re.M
        )
        roots = {(a or b).split(".")[0] if not (a or b).startswith(".") else (a or b) for a, b in imports}
        # only the standard library, torch, transformers and same-folder modules
        assert roots <= {
            "__future__",
            "dataclasses",
            "typing",
            "collections",
            "functools",
            "math",
            "pathlib",
            "re",
            "torch",
            "transformers",
            ".layer",
            ".router",
            ".dispatch",
            ".nll",
            ".cpu_linear",
            ".configuration_quartet_moe",
        }, (name, roots)


def test_clean_subprocess_loads_with_trust_remote_code_and_gives_the_same_logits(moe_export, tmp_path):
    out = tmp_path / "logits.pt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_MODULES_CACHE=str(tmp_path / "hf_modules"), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CLEAN_LOAD, str(moe_export), repr(TOKENS), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = torch.load(out)
    assert loaded["cls"].startswith("transformers_modules.") and loaded["cls"].endswith(
        "modeling_quartet_moe.QuartetMoEForCausalLM"
    )
    assert torch.equal(loaded["logits"], quartet_logits(moe_export))


def test_quartet_loaders_need_no_trust_remote_code(moe_export):
    from inference.backends.hf import HFBackend
    from inference.sampling import SamplingParams

    logits = quartet_logits(moe_export)  # model=hf model.pretrained=<moe hf_model>, trust_remote_code off
    assert logits.shape == (1, len(TOKENS[0]), logits.shape[-1])
    backend = HFBackend.from_pretrained(str(moe_export), dtype="float32")
    assert type(backend.model).__module__ == "models.quartet_moe.modeling_quartet_moe"
    with torch.no_grad():
        assert torch.equal(backend.model(torch.tensor(TOKENS)).logits, logits)
    out = backend.generate(["What is 2 + 3?"], SamplingParams(n=1, temperature=0.0, max_new_tokens=4))
    assert len(out) == 1 and out[0][0].completion_tokens >= 1


def test_generate_backend_loads_it_in_a_fresh_process(moe_export, tmp_path):
    """generate.py's stages build their backend through ``inference.build_backend``: in a fresh Python
    that imported nothing else first, the MoE folder still loads as Quartet's class."""
    code = (
        "from inference.backends.factory import build_backend\n"
        f"b = build_backend('hf', path={str(moe_export)!r}, dtype='float32')\n"
        "print(type(b.model).__module__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "models.quartet_moe.modeling_quartet_moe"


def test_eval_py_runs_on_an_exported_moe_folder(moe_export, tmp_path):
    from eval import evaluate

    overrides = ["model=hf", f"model.pretrained={moe_export}", "decoding=greedy", "decoding.max_new_tokens=6"]
    cfg = compose_cfg(
        [*overrides, "data.limit=3", "print_config=false", "progress=false"], tmp_path, config_name="eval"
    )
    metrics = evaluate(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["backend"]["model_id"]
    assert results["settings"]["num_questions"] == 3 and set(results["metrics"]) == {"greedy"}
    assert metrics["reasoning/greedy/accuracy"] == results["metrics"]["greedy"]["accuracy"]
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 3
