"""Issue 21, "Config values": ``trainer.enable_progress_bar=false`` (and ``enable_model_summary=false``)
work with the default ``callbacks`` group, whose progress bar and model summary Lightning would otherwise
refuse with a MisconfigurationException traceback."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ROOT, compose_cfg


def test_switched_off_callbacks_are_dropped_and_the_others_kept():
    from lightning.pytorch.callbacks import (
        LearningRateMonitor,
        RichModelSummary,
        RichProgressBar,
        TQDMProgressBar,
    )

    from callbacks.switches import drop_switched_off

    bar, tqdm, summary, lr = RichProgressBar(), TQDMProgressBar(), RichModelSummary(), LearningRateMonitor()
    every = [bar, tqdm, summary, lr]
    assert drop_switched_off(every, {"enable_progress_bar": False}) == [summary, lr]
    assert drop_switched_off(every, {"enable_model_summary": False}) == [bar, tqdm, lr]
    assert drop_switched_off(every, {"enable_progress_bar": False, "enable_model_summary": False}) == [lr]
    assert drop_switched_off(every, {}) == every


@pytest.mark.slow
def test_train_with_the_default_callbacks_and_no_progress_bar(tmp_path):
    from train import train

    data = tmp_path / "chat.jsonl"
    data.write_text("".join((ROOT / "data" / "chat" / "dialogues.jsonl").read_text().splitlines(True)[:8]))
    cfg = compose_cfg(
        ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "print_config=false",
         "callbacks=default", "trainer.max_steps=1", "trainer.limit_val_batches=1", "logger=csv", "export=false",
         f"data.path={data}", "data.cache_dir=null", "data.batch_size=4", "model.hidden_size=32",
         "model.intermediate_size=64", "model.num_layers=1"],
        tmp_path / "run",
    )  # fmt: skip
    train(cfg)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"
