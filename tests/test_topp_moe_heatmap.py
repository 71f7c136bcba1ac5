"""MoEHeatmap and TopPMoEModule end to end (in-process): the heatmap holds exactly the logged
experts-per-token values, lands as a PNG and in TensorBoard, and survives an exact mid-run resume."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from callbacks.moe_heatmap import MoEHeatmap
from tests.helpers import FAST, assert_bitwise_equal, compose_cfg, crash_at, load_weights
from train import train

RUN = [
    "experiment=moe_tiny_topp",
    "debug=default",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "+callbacks.moe_heatmap._target_=callbacks.moe_heatmap.MoEHeatmap",
    *FAST,
]
CRASH = crash_at(2)
LAYERS = [0, 1, 2, 3]


def run_cfg(out, *extra):
    return compose_cfg([*RUN, f"+callbacks.moe_heatmap.path={out}/moe_experts_heatmap.png", *extra], out)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("moe_full")
    metrics = train(run_cfg(out, "logger=default"))
    return out, metrics


def logged_experts_per_token(out) -> np.ndarray:
    """[layers, steps] of moe/layer{i}/experts_per_token from the CSV log, in step order."""
    rows = [
        r for r in csv.DictReader((out / "csv" / "metrics.csv").open()) if r["moe/layer0/experts_per_token"]
    ]
    rows.sort(key=lambda r: int(r["step"]))
    return np.array([[float(r[f"moe/layer{i}/experts_per_token"]) for r in rows] for i in LAYERS])


def test_heatmap_matrix_is_the_logged_values_and_is_drawn(full_run):
    out, metrics = full_run
    data = json.loads((out / "moe_experts_heatmap.json").read_text())
    assert data["steps"] == [1, 2, 3, 4] and data["layers"] == LAYERS
    logged = logged_experts_per_token(out)
    assert logged.shape == (4, 4)
    np.testing.assert_allclose(np.array(data["experts_per_token"]), logged, rtol=1e-6)
    # The metrics are what the module computed: at least one expert per token, at most 8.
    assert (logged >= 1).all() and (logged <= 8).all()
    image = __import__("matplotlib.image", fromlist=["imread"]).imread(out / "moe_experts_heatmap.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 400
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={IMAGES: 0})
    events.Reload()
    assert "moe/experts_per_token_heatmap" in events.Tags()["images"]
    assert events.Images("moe/experts_per_token_heatmap")[-1].step == 4


def test_run_logs_train_and_val_moe_metrics_and_exports(full_run):
    out, metrics = full_run
    for name in ("train/loss", "train/lm_loss", "val/loss", "val/ppl", "moe/experts_per_token"):
        assert name in metrics and math.isfinite(metrics[name]), name
    for name in ("experts_per_token", "activated_ratio_vs_top2", "balance_loss", "dynamic_loss", "aux_loss"):
        assert f"val/moe/{name}" in metrics
    for i in LAYERS:
        for name in ("experts_per_token", "router_entropy", "tokens_per_expert/e7", "experts_hist/k1"):
            assert f"moe/layer{i}/{name}" in metrics and f"val/moe/layer{i}/{name}" in metrics
    k = [metrics[f"val/moe/layer{i}/experts_per_token"] for i in LAYERS]
    assert metrics["val/moe/experts_per_token"] == pytest.approx(sum(k) / 4, rel=1e-6)
    assert metrics["val/moe/activated_ratio_vs_top2"] == pytest.approx(sum(k) / 8, rel=1e-6)
    hist = [metrics[f"val/moe/layer0/experts_hist/k{j}"] for j in range(1, 9)]
    assert sum(hist) == pytest.approx(1.0, abs=1e-6)
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-4)
    # The exported folder is a Quartet MoE that transformers loads (after importing the package).
    from transformers import AutoModelForCausalLM

    import models.quartet_moe  # noqa: F401  (registers the Auto classes)

    model = AutoModelForCausalLM.from_pretrained(out / "hf_model")
    assert model.config.model_type == "quartet_topp_moe" and model.config.router_aux_loss_coef == 1e-2


def test_resume_mid_run_is_exact_and_continues_the_heatmap(tmp_path, full_run):
    full, _ = full_run
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(run_cfg(tmp_path, "logger=csv", *CRASH))
    half = json.loads((tmp_path / "moe_experts_heatmap.json").read_text())
    assert half["steps"] == [1, 2]
    train(run_cfg(tmp_path, "logger=csv", "ckpt_path=last", "+callbacks.crash.step=100"))
    assert_bitwise_equal(
        load_weights(tmp_path / "checkpoints" / "last.ckpt"), load_weights(full / "checkpoints" / "last.ckpt")
    )
    resumed = json.loads((tmp_path / "moe_experts_heatmap.json").read_text())
    assert resumed == json.loads((full / "moe_experts_heatmap.json").read_text())


def test_heatmap_unit_record_state_and_render(tmp_path):
    cb = MoEHeatmap(path=str(tmp_path / "h.png"))
    assert not cb.record(1, {"train/loss": torch.tensor(1.0)})  # a dense run: nothing to draw
    cb.record(1, {"moe/layer0/experts_per_token": torch.tensor(2.5), "moe/layer0/balance_loss": 1.0})
    cb.record(2, {"moe/layer0/experts_per_token": 2.0, "moe/layer2/experts_per_token": 1.5})
    assert cb.layers == [0, 2] and cb.steps == [1, 2]
    np.testing.assert_array_equal(cb.matrix(), [[2.5, 2.0], [np.nan, 1.5]])
    clone = MoEHeatmap()
    clone.load_state_dict(cb.state_dict())
    np.testing.assert_array_equal(clone.matrix(), cb.matrix())
    image = cb.render()
    assert image.dtype == np.uint8 and image.shape[2] == 3
