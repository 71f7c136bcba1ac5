"""Issue 11 §1.6: clear messages for a missing model folder, a run folder given as a model, a zero
max_steps, and ckpt_path=last in a fresh folder."""

from __future__ import annotations

import logging

import pytest

from models import load_tokenizer
from models.dense import load_hf as _load_hf
from tests.helpers import FAST, compose_cfg
from train import train
from utils.config_validation import validate_train_config
from utils.errors import ConfigError, QuartetError
from utils.model_paths import looks_like_path


@pytest.mark.parametrize("where", ["abs", "./rel", "~/q-nope"])
def test_missing_pretrained_folder_says_the_path_does_not_exist(tmp_path, where):
    missing = {
        "abs": str(tmp_path / "no" / "model"),
        "./rel": "./no-such-model-dir",
        "~/q-nope": "~/no-such-q",
    }[where]
    cfg = compose_cfg(["model=hf", f"model.pretrained='{missing}'", "debug=default", *FAST], tmp_path)
    with pytest.raises(ConfigError, match=rf"model.pretrained={missing}: path does not exist") as e:
        validate_train_config(cfg)
    assert "repo" not in str(e.value).lower()
    with pytest.raises(QuartetError, match=rf"^model.pretrained={missing}: path does not exist$"):
        _load_hf({"pretrained": missing})


def test_a_run_folder_given_as_a_model_points_at_its_hf_model(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("a: 1\n")
    (run / "summary.json").write_text("{}\n")
    (run / "hf_model").mkdir()
    expected = rf"model.pretrained={run}: this looks like a run folder; use {run}/hf_model$"
    with pytest.raises(QuartetError, match=expected):
        _load_hf({"pretrained": str(run)})
    with pytest.raises(
        QuartetError, match=rf"model.tokenizer={run}: this looks like a run folder; use {run}/hf_model"
    ):
        load_tokenizer(str(run))
    cfg = compose_cfg(["model=hf", f"model.pretrained={run}", "debug=default", *FAST], tmp_path)
    with pytest.raises(ConfigError, match="this looks like a run folder; use"):
        validate_train_config(cfg)


def test_a_model_folder_and_hub_ids_pass(tiny_hf_dir):
    assert _load_hf({"pretrained": str(tiny_hf_dir), "dtype": "float32"}).config.num_hidden_layers == 2
    assert not looks_like_path("Qwen/Qwen2.5-0.5B-Instruct") and not looks_like_path("gpt2")
    assert looks_like_path("/models/m") and looks_like_path("runs/2026/hf_model") and looks_like_path("~/m")


def test_max_steps_zero_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.max_steps=0 must be a positive integer \(or -1\)"):
        train(compose_cfg(["debug=default", "trainer.max_steps=0", *FAST], tmp_path))
    assert not any(tmp_path.iterdir())


def test_ckpt_path_last_in_a_fresh_folder_warns(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        train(compose_cfg(["debug=default", "logger=none", "ckpt_path=last", *FAST], tmp_path))
    warnings = [r for r in caplog.records if "ckpt_path=last" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "starting from scratch" in warnings[0].getMessage()
