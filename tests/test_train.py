"""End-to-end training on the bundled data: the loss falls, resume is bitwise exact, export loads."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate
from transformers import AutoModelForCausalLM

from tests.helpers import FAST, assert_bitwise_equal, compose_cfg, crash_at, load_weights, run_script
from train import train

# 16 per batch over 570 dialogues: 36 batches per epoch, so 30 → 60 crosses an epoch boundary.
RESUME = [
    "debug=default",
    "data.batch_size=16",
    "trainer.max_epochs=3",
    "trainer.max_steps=60",
    "trainer.limit_val_batches=0",
    "callbacks.model_checkpoint.every_n_train_steps=30",
    "logger=csv",
    *FAST,
]
CRASH = crash_at(30)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(compose_cfg(RESUME, out))
    return load_weights(out / "checkpoints" / "last.ckpt")


def test_loss_falls_on_bundled_data(tmp_path):
    cfg = compose_cfg(
        ["debug=default", "trainer.max_steps=80", "data.batch_size=16", "logger=csv", *FAST], tmp_path
    )
    train(cfg)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["first_loss"] > 5.0  # ln(1024) ≈ 6.9 at random init
    assert s["last_loss"] < s["first_loss"] - 3.0, s


def test_mid_epoch_resume_with_ckpt_path_last_is_bitwise_exact(tmp_path, uninterrupted):
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_cfg(RESUME + CRASH, tmp_path))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 30
    assert not all(torch.equal(ckpt["state_dict"][k], uninterrupted[k]) for k in uninterrupted)
    train(compose_cfg([*RESUME, "ckpt_path=last"], tmp_path))
    assert_bitwise_equal(load_weights(tmp_path / "checkpoints" / "last.ckpt"), uninterrupted)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["resumed_from"].endswith("last.ckpt") and s["global_step"] == 60


def test_resume_dir_from_the_command_line_is_bitwise_exact(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    crashed = run_script("train.py", [*RESUME, *CRASH, f"hydra.run.dir={run_dir}"])
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    original_config = (run_dir / ".hydra" / "config.yaml").read_text()
    # The saved config holds the crash callback too; a plain key override moves it out of the way.
    resumed = run_script("train.py", [f"resume_dir={run_dir}", "+callbacks.crash.step=1000"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_bitwise_equal(load_weights(run_dir / "checkpoints" / "last.ckpt"), uninterrupted)
    assert (run_dir / ".hydra" / "config.yaml").read_text() == original_config
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    steps = {int(r.split(",")[[*rows[0].split(",")].index("step")]) for r in rows[1:] if r}
    assert min(steps) < 30 < max(steps), "the CSV log continues across the resume"


def test_bad_ckpt_path_is_a_clear_error(tmp_path):
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match="ckpt_path=.*nope.ckpt: checkpoint not found"):
        train(compose_cfg(["debug=default", f"ckpt_path={tmp_path}/nope.ckpt", *FAST], tmp_path))


def test_export_loads_with_transformers_and_matches_module_logits(tmp_path):
    cfg = compose_cfg(["debug=default", "export=true", "logger=none", *FAST], tmp_path)
    train(cfg)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["hf_model"] == str(tmp_path / "hf_model")
    module = instantiate(cfg.module)
    module.configure_model()
    module.load_state_dict(load_weights(tmp_path / "checkpoints" / "last.ckpt"))
    module.eval()
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf_model").eval()
    ids = module.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name three fruits."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        ours = module(ids["input_ids"], ids["attention_mask"])
        theirs = hf(**ids).logits
    assert torch.equal(ours, theirs)
    assert (tmp_path / "hf_model" / "tokenizer.json").exists()


@pytest.mark.parametrize("model", ["hf", "moe_upcycle"])
def test_missing_pretrained_is_a_clear_error(tmp_path, model):
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.pretrained is required \(set model.pretrained=...\)"):
        train(compose_cfg([f"model={model}", "debug=default", *FAST], tmp_path))
