"""generate.py stage=parrot_rollout on a tiny HF model: chat JSONL that data=chat reads, statistics that
match the written dialogues, seeds from chat or question files, and clear errors on bad seeds."""

from __future__ import annotations

import json

import pytest

from tests.helpers import compose_cfg


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def stage_cfg(tmp_path, tiny_hf_dir, seeds, extra=()):
    model = f"{{backend: hf, path: {tiny_hf_dir}, dtype: float32, sampling: {{temperature: 1.0, max_new_tokens: 12, seed: 1}}}}"
    return compose_cfg(
        [
            "stage=parrot_rollout",
            f"stage.input={seeds}",
            f"stage.answer_model={model}",
            f"stage.ask_model={model}",
            "stage.turns=3",
            "stage.filters.min_query_words=1",
            "stage.filters.reject_cut_off=false",
            *extra,
        ],
        tmp_path,
        config_name="generate",
    )


def test_rollout_stage_writes_chat_data_and_statistics(tmp_path, tiny_hf_dir):
    from datamodules.chat import ChatDataModule
    from generate import generate
    from stages.parrot_rollout.stats import rollout_statistics

    seeds = write(
        tmp_path / "seeds.jsonl",
        [{"messages": [{"role": "user", "content": f"Tell me about river number {i}."}]} for i in range(4)]
        + [{"question": "What is 7 plus 5?"}],
    )
    cfg = stage_cfg(tmp_path, tiny_hf_dir, seeds)
    generate(cfg)
    rows = [json.loads(x) for x in (tmp_path / "dialogues.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dialogues"] == len(rows) and summary["sessions"] == 5
    assert rows and all(r["messages"][0]["role"] == "user" for r in rows)
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] * r["turns"] for r in rows)
    assert summary["statistics"] == json.loads(json.dumps(rollout_statistics([r["messages"] for r in rows])))
    assert sum(summary["end_reasons"].values()) == len(rows)
    # the answer model makes one batched call per turn
    assert summary["generation"]["answer_model"]["backend_calls"] <= 3
    # ready for data=chat
    dm = ChatDataModule(path=str(tmp_path / "dialogues.jsonl"), tokenizer=str(tiny_hf_dir), val_fraction=0.0)
    dm.setup("fit")
    assert len(dm.train_dataset) == len(rows)


def test_bad_seed_is_one_clear_error(tmp_path, tiny_hf_dir):
    from generate import generate
    from utils.errors import DataError

    seeds = write(tmp_path / "seeds.jsonl", [{"question": "ok?"}, {"prompt": "no seed field"}])
    with pytest.raises(DataError, match="seeds.jsonl:2: a seed needs"):
        generate(stage_cfg(tmp_path, tiny_hf_dir, seeds))


def test_next_turn_over_a_chat_endpoint_is_a_config_error(tmp_path, tiny_hf_dir):
    from omegaconf import open_dict

    from generate import generate
    from utils.errors import ConfigError

    seeds = write(tmp_path / "seeds.jsonl", [{"question": "ok?"}])
    cfg = stage_cfg(tmp_path, tiny_hf_dir, seeds)
    with open_dict(cfg):
        cfg.stage.ask_model = {"backend": "openai_http", "base_url": "http://127.0.0.1:9", "model": "m"}
    with pytest.raises(ConfigError, match="stage.ask_prompt=swap_roles"):
        generate(cfg)
