"""CaPOModule: reference modes, the first-step ln 2, config errors, precompute cache and exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from tests.helpers import FAST, assert_bitwise_equal, compose_cfg, load_weights
from utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "data" / "capo" / "pairs.jsonl"


def build(tmp_path: Path, overrides: list[str]):
    """Module + datamodule from the real capo_tiny config, the model built as Lightning would."""
    cfg = compose_cfg(["experiment=capo_tiny", "data.batch_size=6", *overrides], tmp_path)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    module = instantiate(cfg.module)
    module.configure_model()
    return module, dm


def first_batch(dm):
    return next(iter(dm.train_dataloader()))


def test_copy_reference_equals_policy_and_first_loss_is_ln2(tmp_path):
    module, dm = build(tmp_path, ["module.reference=copy"])
    policy, ref = dict(module.model.named_parameters()), dict(module.ref_model.named_parameters())
    assert policy.keys() == ref.keys()
    assert all(torch.equal(policy[k], ref[k]) and not ref[k].requires_grad for k in policy)
    loss, m = module.compute_loss(first_batch(dm))
    assert abs(loss.item() - math.log(2)) < 1e-6
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert m[key].abs().max().item() == 0.0
    assert (m["logps/chosen"] < 0).all() and m["logps/chosen"].shape == (6,)
    # The optional SFT term adds λ · (mean NLL of the chosen response tokens).
    module.sft_weight = 0.5
    batch = first_batch(dm)
    loss_sft, m2 = module.compute_loss(batch)
    n_tokens = (batch["labels"][:6, 1:] != -100).sum()
    nll = -m2["logps/chosen"].sum() / n_tokens
    assert m2["sft_loss"].item() == pytest.approx(nll.item(), rel=1e-5)
    assert loss_sft.item() == pytest.approx(math.log(2) + 0.5 * nll.item(), rel=1e-5)


def test_adapter_off_reference_is_the_base_model(tmp_path):
    module, dm = build(tmp_path, ["module.reference=adapter_off", "model.lora.enabled=true"])
    assert module.ref_model is None
    batch = first_batch(dm)
    loss, _ = module.compute_loss(batch)
    assert abs(loss.item() - math.log(2)) < 1e-6  # a fresh LoRA adapter is a no-op
    ref_before = module.reference_logps(batch)
    with torch.no_grad():  # move the adapter: the policy changes, the reference must not
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    policy_now, _ = module.sequence_logps(module.model, batch)
    assert not torch.allclose(policy_now, ref_before)
    assert torch.equal(module.reference_logps(batch), ref_before)
    assert module.model.training  # the reference pass restores train mode


def test_module_config_errors_are_listed_together(tmp_path):
    from hydra.errors import InstantiationException

    cfg = compose_cfg(
        ["experiment=capo_tiny", "module.reference=adapter_off", "module.loss_type=kto", "module.beta=0"],
        tmp_path,
    )
    with pytest.raises(InstantiationException) as e:
        instantiate(cfg.module)
    assert isinstance(e.value.__cause__, ConfigError)  # train.py prints it as one `error:` line, exit 2
    text = str(e.value.__cause__)
    assert "adapter_off needs a LoRA policy" in text and "loss_type='kto'" in text and "beta=0" in text


def run_train(tmp_path: Path, overrides: list[str]) -> dict:
    from train import train

    cfg = compose_cfg(["experiment=capo_tiny", "debug=default", "logger=csv", *FAST, *overrides], tmp_path)
    train(cfg)
    return json.loads((tmp_path / "summary.json").read_text())


def test_precomputed_reference_trains_caches_and_resumes_exactly(tmp_path):
    pairs = tmp_path / "pairs.jsonl"  # a slice of the bundled pairs keeps the pre-pass short
    pairs.write_text("".join(PAIRS.read_text().splitlines(True)[:120]))
    common = [
        f"data.path={pairs}",
        "module.reference=precomputed",
        "module.shared_prompt=true",  # the pre-pass and the policy each run a pair's prompt once
        f"paths.cache_dir={tmp_path / 'cache'}",
        "data.batch_size=4",
        "trainer.limit_val_batches=1",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "trainer.log_every_n_steps=1",
    ]
    full = run_train(tmp_path / "full", [*common, "trainer.max_steps=4"])
    assert full["global_step"] == 4
    assert abs(full["first_step_loss"] - math.log(2)) < 1e-5
    caches = sorted((tmp_path / "cache").glob("capo-ref-*.pt"))
    assert len(caches) == 2  # train and val pre-passes, keyed by data + initial weights
    stamps = [c.stat().st_mtime_ns for c in caches]
    ckpt = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    saved = ckpt["capo_reference_logps"]["columns"]["train"]
    assert saved["ref_chosen_logps"].dtype == torch.float32 and (saved["ref_chosen_logps"] < 0).all()
    assert not any(k.startswith("ref_model") for k in ckpt["state_dict"])  # no second model

    # Crashed after 2 steps, then resumed to 4: the same weights bit for bit.
    crash = ["+callbacks.crash._target_=tests.helpers.CrashAtStep", "+callbacks.crash.step=2"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_train(tmp_path / "half", [*common, "trainer.max_steps=4", *crash])
    resumed = run_train(tmp_path / "half", [*common, "trainer.max_steps=4", "ckpt_path=last"])
    assert resumed["global_step"] == 4
    assert [c.stat().st_mtime_ns for c in caches] == stamps  # the cache was reused, not recomputed
    assert_bitwise_equal(
        load_weights(tmp_path / "full" / "checkpoints" / "last.ckpt"),
        load_weights(tmp_path / "half" / "checkpoints" / "last.ckpt"),
    )
    metrics = full["metrics"]
    for key in ("train/loss", "train/rewards/accuracies", "train/logps/chosen", "train/rewards/margins"):
        assert key in metrics
    assert any(k.startswith("train/rewards/accuracies/") for k in metrics)
