"""The reasoning-eval callback logs val/reasoning/... metrics of the live model, equal to what the
inference layer gives for the exported model, on the schedule asked for."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch

from callbacks.reasoning_eval_callback import ReasoningEvalCallback
from inference.backends.hf import HFBackend
from tests.helpers import FAST, ROOT, compose_cfg
from utils.errors import ConfigError

TEST = str(ROOT / "data" / "reasoning" / "test.jsonl")
METHOD = {"methods": ["greedy", "sa"], "num_paths": 3, "ks": [2, 3], "max_new_tokens": 12, "seed": 0}


def test_reasoning_tiny_training_logs_what_eval_computes(tmp_path) -> None:
    from train import train

    overrides = [
        "experiment=reasoning_tiny",
        "debug=default",
        "callbacks=reasoning_eval",  # the command line wins over debug's callbacks=minimal
        "logger=csv",
        "callbacks.reasoning_eval.limit=6",
        "callbacks.reasoning_eval.method.num_paths=3",
        "callbacks.reasoning_eval.method.max_new_tokens=12",
        "model.hidden_size=64",
        "model.num_layers=2",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        *FAST,
    ]
    cfg = compose_cfg(overrides, tmp_path)
    metrics = train(cfg)
    keys = {
        f"val/reasoning/{m}/{s}"
        for m in ("greedy", "sa@3")
        for s in ("accuracy", "parse_failure_rate", "tokens_per_question")
    }
    assert keys <= set(metrics)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert keys <= set(summary["metrics"])
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    logged = [r for r in rows if r.get("val/reasoning/greedy/accuracy")]
    assert len(logged) == 1 and int(logged[0]["step"]) == 1  # once, at the end of the 2 steps (index 1)

    # The same questions and settings on the exported model, through the inference layer.
    callback = ReasoningEvalCallback(
        **{k: v for k, v in _plain(cfg.callbacks.reasoning_eval).items() if k != "_target_"}
    )
    callback.setup(None, None, "fit")  # type: ignore[arg-type]
    backend = HFBackend.from_pretrained(str(tmp_path / "hf_model"), dtype="float32")
    ref = callback.spec.run(backend, callback.records)
    for m in ("greedy", "sa@3"):
        assert metrics[f"val/reasoning/{m}/accuracy"] == pytest.approx(ref["metrics"][m]["accuracy"])
        assert metrics[f"val/reasoning/{m}/tokens_per_question"] == pytest.approx(
            ref["metrics"][m]["tokens_per_question"]["total"]
        )


def _plain(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


class _TinyLM(L.LightningModule):
    """A tiny random Llama with the shipped tokenizer; trains on nothing useful (a constant batch)."""

    def __init__(self) -> None:
        super().__init__()
        from models import build_model, load_tokenizer

        self.tokenizer = load_tokenizer(str(ROOT / "assets" / "tokenizer"))
        cfg = {
            "kind": "tiny",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_layers": 1,
            "num_heads": 4,
            "num_kv_heads": 2,
        }
        torch.manual_seed(0)
        self.model = build_model(cfg, self.tokenizer)

    def training_step(self, batch, batch_idx):
        return self.model(input_ids=batch[0], labels=batch[0]).loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.model(input_ids=batch[0], labels=batch[0]).loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def test_schedule_every_n_val_runs_and_fit_end(tmp_path) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    data = DataLoader(TensorDataset(torch.randint(0, 500, (4, 8))), batch_size=2)
    callback = ReasoningEvalCallback(TEST, limit=3, method=METHOD, every_n_val_runs=2)
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="", version="")
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        callbacks=[callback],
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(_TinyLM(), train_dataloaders=data, val_dataloaders=data)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    steps = [int(r["step"]) for r in rows if r.get("val/reasoning/sa@3/accuracy")]
    # Validation run 2 (after optimizer step 2) and the end of fit (step 3); Lightning logs the
    # metrics of step k at index k - 1. Run 1 and run 3 were not evaluated.
    assert steps == [1, 2]
    assert callback.val_runs == 3 and callback.last_step == 3
    assert set(callback.last_metrics) == {
        f"val/reasoning/{m}/{s}"
        for m in ("greedy", "sa@2", "sa@3")
        for s in ("accuracy", "parse_failure_rate", "tokens_per_question")
    }
    assert callback.last_results["settings"]["num_questions"] == 3
    assert callback.state_dict() == {"val_runs": 3, "last_step": 3}


def test_callback_settings_are_checked_at_construction() -> None:
    with pytest.raises(ConfigError) as err:
        ReasoningEvalCallback(TEST, method={"methods": ["sa"], "num_paths": 0}, every_n_val_runs=-1)
    text = str(err.value)
    assert "callbacks.reasoning_eval.every_n_val_runs=-1" in text
    assert "callbacks.reasoning_eval.method.num_paths (m, sampled paths per question)" in text
