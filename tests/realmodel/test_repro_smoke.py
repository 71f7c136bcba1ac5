"""A paper recipe on a real checkpoint (issue #16 §5): RLMEC's GRM recipe (chat SFT at the paper's
settings, batch 32 through accumulation) under debug=smoke on SmolLM2-135M-Instruct. One representative
recipe keeps the tier's time down; every recipe's composition is checked in tests/test_repro_recipes.py, and
the evaluation recipes run the registry path that tests/test_benchmark_eval.py runs on the tiny model."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import FAST, compose_cfg
from tests.realmodel.conftest import DIALOGUES

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]


def test_rlmec_grm_recipe_trains_two_steps_on_the_real_model(tmp_path, real_model_dir) -> None:
    from train import train

    overrides = [
        "experiment=repro/rlmec_gsm8k_grm",
        "debug=smoke",
        f"model.pretrained={real_model_dir}",
        "model.dtype=float32",
        f"data.path={DIALOGUES}",
        "data.max_length=96",
        "data.on_empty_mask=skip",
        "trainer=cpu",
        *FAST,
    ]
    recipe = compose_cfg([o for o in overrides if o != "debug=smoke"], tmp_path)
    assert recipe.trainer.accumulate_grad_batches == 8 and recipe.module.optimizer.lr == 2e-5
    cfg = compose_cfg(overrides, tmp_path)
    metrics = train(cfg)
    assert metrics and all(math.isfinite(float(v)) for v in metrics.values())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["global_step"] == 2
