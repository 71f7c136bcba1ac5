"""Every shipped config composes, and every experiment trains for 2 steps on CPU."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tests.helpers import CONF, FAST, compose_cfg

GROUPS = [
    "model",
    "module",
    "data",
    "trainer",
    "callbacks",
    "logger",
    "paths",
    "debug",
    "experiment",
    "hparams_search",
]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# Single-process trainers only inside pytest; ddp/fsdp run as subprocesses in test_distributed.py.
IN_PROCESS_TRAINERS = {"default", "cpu"}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_config_option_composes_and_resolves(tmp_path, group, option, tiny_hf_dir):
    overrides = [
        f"{group}={option}",
        f"model.pretrained={tiny_hf_dir}" if _needs_pretrained(group, option) else None,
    ]
    cfg = compose_cfg([o for o in overrides if o], tmp_path)
    cfg_no_hydra = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.to_container(cfg_no_hydra, resolve=True, throw_on_missing=True)
    assert cfg.data._target_ and cfg.module._target_ and cfg.trainer._target_


def _needs_pretrained(group: str, option: str) -> bool:
    if group == "model":
        return option in ("hf", "moe_upcycle")
    if group == "experiment":
        return "pretrained: ???" in _experiment_model(option) or option.endswith("_hf")
    return False


def _experiment_model(option: str) -> str:
    text = (CONF / "experiment" / f"{option}.yaml").read_text()
    return "pretrained: ???" if "override /model: hf" in text else text


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_two_steps(tmp_path, experiment, tiny_hf_dir):
    from train import train

    overrides = [f"experiment={experiment}", "debug=default", "logger=csv", *FAST]
    if "override /model: hf" in (CONF / "experiment" / f"{experiment}.yaml").read_text():
        overrides.append(f"model.pretrained={tiny_hf_dir}")
    if experiment in (
        "rlmec_tiny",
        "rlmec_hf",
    ):  # its data comes from the pipeline's stages: RL records made here
        from models import load_tokenizer
        from tests.rlmec_fixtures import rl_records, write_jsonl

        rows = rl_records(load_tokenizer(str(tiny_hf_dir)), 8)
        overrides.append(f"data.path={write_jsonl(tmp_path / 'rl_data.jsonl', rows)}")
    if "override /module: online_rl" in (
        CONF / "experiment" / f"{experiment}.yaml"
    ).read_text() or experiment in (
        "rloo_tiny",
        "rloo_hf",
        "ppo_tiny",
        "ppo_hf",
    ):  # online RL: short completions of the random model (it never ends on EOS)
        overrides += ["module.sampling.max_new_tokens=8", "module.num_generations=2", "data.limit=16"]
        if experiment.startswith("ppo"):  # μ > 1 optimiser steps a batch: one pass, so 2 steps are 2 batches
            overrides.append("module.inner_steps=1")
    if experiment.startswith("rlmec_online"):  # online RLMEC: the tiny folder stands in for the GRM
        overrides += [
            f"module.grm.path={tiny_hf_dir}",
            "module.sampling.max_new_tokens=8",
            "module.grm.max_new_tokens=8",
        ]
    cfg = compose_cfg(overrides, tmp_path)
    assert cfg.trainer.get("strategy") is None or cfg.trainer.devices == 1
    metrics = train(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["global_step"] == 2
    assert summary["steps_recorded"] == 2
    assert all(v == v for v in metrics.values()), "a metric is NaN"
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_takes_debug_smoke(tmp_path, experiment, tiny_hf_dir):
    """`debug=smoke` (the quick check of a model, and of scripts/check_model.sh) overrides shared data
    keys such as data.cache_dir: every experiment's data module must accept them."""
    from hydra.utils import instantiate

    overrides = [f"experiment={experiment}", "debug=smoke"]
    if "override /model: hf" in (CONF / "experiment" / f"{experiment}.yaml").read_text():
        overrides.append(f"model.pretrained={tiny_hf_dir}")
    cfg = compose_cfg(overrides, tmp_path)
    assert cfg.trainer.max_steps == 2 and cfg.data.cache_dir is None
    data = instantiate(cfg.data)
    assert data.batch_size == 2
    if hasattr(data, "block_size"):  # packed corpora: max_length caps the block
        assert data.block_size <= 256
