"""Model-kind checks live on the kind (models/registry.py ModelKind.problems), issue #20."""

from __future__ import annotations

from models import get_model_kind, model_config_problems


def test_tiny_kind_checks_sizes_and_heads():
    tiny = {"kind": "tiny", "hidden_size": 30, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
    assert model_config_problems(tiny) == ["model.hidden_size=30 must be divisible by model.num_heads=4"]
    assert model_config_problems({**tiny, "hidden_size": 32}) == []
    assert model_config_problems({**tiny, "num_layers": 0}) == [
        "model.num_layers=0 must be a positive integer"
    ]


def test_weight_loading_kinds_need_pretrained_and_config_built_kinds_are_flagged():
    assert model_config_problems({"kind": "hf", "pretrained": None}) == [
        "model.pretrained must name a folder or hub id for model.kind=hf"
    ]
    assert model_config_problems({"kind": "hf", "pretrained": "/m"}) == []
    assert model_config_problems({"kind": "nope"})[0].startswith(
        "model.kind='nope' must be one of 'tiny', 'hf'"
    )
    flags = {k: get_model_kind(k).built_from_config for k in ("tiny", "hf", "moe", "moe_upcycle")}
    assert flags == {"tiny": True, "hf": False, "moe": True, "moe_upcycle": False}


def test_packing_is_refused_for_a_kind_whose_attention_reads_no_row_boundaries():
    moe = {"kind": "moe", "num_experts": 2}
    assert not any("data.packing" in p for p in model_config_problems(moe))
    assert any(
        p.startswith("data.packing=true: model.kind=moe's attention reads no row boundaries")
        for p in model_config_problems(moe, packing=True)
    )
    tiny = {"kind": "tiny", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
    assert model_config_problems(tiny, packing=True) == []
