"""Pytest fixtures shared by the whole suite."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ("tests.tokenizer_fixtures",)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("QUARTET_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tiny models: one intra-op thread avoids thread start-up and contention costs (subprocesses of
# train.py choose their own).
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="module")
def _return_freed_memory():
    """After each test file, collect garbage and hand freed heap back to the OS: in-process training runs
    (the real-model tier's 135M-parameter model above all) otherwise leave the worker's RSS at its peak."""
    yield
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@pytest.fixture(autouse=True)
def _restore_logging():
    """Put every logger's handlers back after each test. Entry points run in-process under
    ``@hydra.main`` configure logging with a handler on the sys.stderr of that moment, which is
    pytest's capture stream for that test; left in place, it fails with "I/O operation on closed
    file" in whatever test runs next in the worker."""
    import logging

    def snapshot() -> dict:
        loggers = [logging.getLogger()] + [
            lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
        ]
        return {lg: (lg.handlers[:], lg.level, lg.disabled, lg.propagate) for lg in loggers}

    saved = snapshot()
    yield
    for lg in snapshot():
        handlers, level, disabled, propagate = saved.get(lg, ([], logging.NOTSET, False, True))
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.disabled, lg.propagate = disabled, propagate


@pytest.fixture(scope="session")
def tokenizer():
    from models.tokenizer import load_tokenizer

    return load_tokenizer(str(ROOT / "assets" / "tokenizer"))


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny random Llama saved with ``save_pretrained`` (plus the shipped tokenizer): stands in for a
    user's Hugging Face model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_hf")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
