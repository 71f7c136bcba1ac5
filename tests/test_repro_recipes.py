"""The papers' recipes (issue #16 §5, conf/experiment/repro/): every one composes with its entry point
and resolves, trains at the papers' effective batch of 32 through accumulation with the papers'
learning rates and epochs (METHODS.md), and the evaluation recipes sweep the papers' benchmarks."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from reasoning.benchmarks import registered_benchmarks
from tests.helpers import CONF, compose_cfg

RECIPES = sorted(p.stem for p in (CONF / "experiment" / "repro").glob("*.yaml"))
#: recipe -> (lr, epochs) from METHODS.md (§1 Ask model and CaPO, §3 RLMEC); None: not stated there.
PAPER = {
    "rlmec_gsm8k_grm": (2e-5, 3),
    "rlmec_gsm8k_policy": (5e-6, 3),
    "parrot_ask": (3e-5, 3),
    "capo": (1e-5, None),
    "moe_topp": (None, None),
    "moe_top2": (None, None),
}
FILL = ["model.pretrained=/models/m", "data.path=/data/d.jsonl"]


def _entry(name: str) -> str:
    text = (CONF / "experiment" / "repro" / f"{name}.yaml").read_text()
    return re.search(r"^# entry: (train|eval)\.py$", text, re.M).group(1)


def test_the_recipes_cover_every_table() -> None:
    assert set(RECIPES) == set(PAPER) | {"rlmec_eval", "sa_grid"}
    assert {_entry(r) for r in PAPER} == {"train"} and _entry("rlmec_eval") == _entry("sa_grid") == "eval"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_training_recipes_use_the_papers_settings(tmp_path, name: str) -> None:
    cfg = compose_cfg([f"experiment=repro/{name}", *FILL], tmp_path)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert cfg.data.batch_size * cfg.trainer.accumulate_grad_batches == 32
    lr, epochs = PAPER[name]
    assert lr is None or cfg.module.optimizer.lr == lr
    assert epochs is None or cfg.trainer.max_epochs == epochs
    if name.startswith("moe"):
        router = cfg.model.router
        assert (router.kind, router.top_p if router.kind == "top_p" else router.top_k) == (
            ("top_p", 0.4) if name == "moe_topp" else ("top_k", 2)
        )
        assert (cfg.module.balance_coef, cfg.module.dynamic_coef) == (1e-2, 1e-4)


def _sweep(tmp_path, name: str) -> tuple:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"experiment=repro/{name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    return cfg, params["task"].split(","), params.get("prompt.answer_format_known")


def test_evaluation_recipes_sweep_the_papers_benchmarks(tmp_path) -> None:
    from runners.reasoning import build_spec

    cfg, tasks, _ = _sweep(tmp_path, "rlmec_eval")
    assert tasks == ["gsm8k", "math", "svamp", "mmlu_math", "ecqa", "qasc", "openbookqa", "arc_easy"]
    spec = build_spec(cfg)
    assert spec.methods == ("greedy",) and spec.prompt.num_fewshot == 0 and cfg.decoding.max_new_tokens == 512
    cfg, tasks, formats = _sweep(tmp_path, "sa_grid")
    assert tasks[-1] == "reasoning_mix" and formats == "true,false"
    assert set(tasks[:-1]) <= set(registered_benchmarks()) and len(tasks) == 7
    spec = build_spec(cfg)
    assert spec.methods == ("greedy", "sc", "sa") and spec.num_paths == 5 and spec.sampling.temperature == 0.7
