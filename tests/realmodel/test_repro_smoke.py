"""The papers' recipes run on a real checkpoint (issue #16 §5): a training recipe (RLMEC's GRM, chat SFT
at the paper's settings) under debug=smoke, and the Self-Agreement grid recipe on GSM8K-schema questions
through the benchmark registry, on SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import FAST, ROOT, compose_cfg
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


def test_self_agreement_grid_recipe_on_gsm8k_schema_questions(tmp_path, real_model_dir) -> None:
    from eval import evaluate

    overrides = [
        "experiment=repro/sa_grid",
        f"data.path={ROOT / 'data' / 'benchmarks' / 'gsm8k_sample.jsonl'}",
        "data.limit=1",
        "model=hf",
        f"model.pretrained={real_model_dir}",
        "model.dtype=float32",
        "decoding.num_paths=2",
        "decoding.ks=[2]",
        "decoding.max_new_tokens=12",
        "prompt.answer_format_known=false",
        "print_config=false",
        "progress=false",
    ]
    evaluate(compose_cfg(overrides, tmp_path, config_name="eval"))
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["metrics"]) == {"greedy", "sc@2", "sa@2"}
    assert results["settings"]["task"] == "gsm8k" and results["settings"]["answer_format_known"] is False
    assert all(m["num_questions"] == 1 for m in results["metrics"].values())
