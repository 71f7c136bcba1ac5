"""eval.py's config tree: every option composes and resolves, the defaults are the paper's, invalid
settings are reported together, and bad input ends in one `error:` line with exit status 2."""

from __future__ import annotations

import json
import re

import pytest
from omegaconf import OmegaConf

from reasoning.prompts import AGREEMENT_PATH_TEMPLATE, AGREEMENT_TEMPLATE
from tests.helpers import CONF, compose_cfg

# eval.py's own groups, every option; plus the shared groups' options an evaluation uses.
EVAL_GROUPS = ["task", "decoding", "backend", "judge"]
OPTIONS = [(g, p.stem) for g in EVAL_GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
OPTIONS += [("model", "tiny"), ("model", "hf"), ("trainer", "ddp"), ("trainer", "gpu"), ("trainer", "cpu")]
NEEDS = {
    ("backend", "openai_http"): ["backend.base_url=http://localhost:8000/v1", "backend.model=served"],
    ("backend", "vllm"): ["backend.path=/models/m"],
    ("task", "mt_bench"): ["judge=standin"],
    ("judge", "hf"): ["task=mt_bench", "judge.path=/models/judge"],
    ("judge", "vllm"): ["task=mt_bench", "judge.path=/models/judge"],
    ("judge", "openai_http"): ["task=mt_bench", "judge.base_url=http://localhost:8000/v1", "judge.model=j"],
    ("judge", "standin"): ["task=mt_bench"],
}
MULTI_TURN = {("task", "mt_bench"), *(("judge", p.stem) for p in (CONF / "judge").glob("*.yaml"))}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_eval_option_composes_and_resolves(tmp_path, group, option, tiny_hf_dir) -> None:
    from runners.reasoning import build_spec

    extra = NEEDS.get((group, option), [])
    if (group, option) == ("model", "hf"):
        extra = [f"model.pretrained={tiny_hf_dir}"]
    cfg = compose_cfg([f"{group}={option}", *extra], tmp_path, config_name="eval")
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if (group, option) in MULTI_TURN:  # MT-Bench: FastChat questions, a judge, its own runner
        assert cfg.task.runner == "runners.mt_bench.run" and cfg.data.path.endswith("question.jsonl")
        assert cfg.judge.backend in ("hf", "vllm", "openai_http", "standin")
        return
    if (group, option) == ("task", "lm_eval"):  # lm-eval's own tasks, scored by the harness
        assert cfg.task.runner == "runners.lm_eval.run" and cfg.get("data") is None
        assert list(cfg.task.tasks) == ["piqa", "hellaswag", "arc_easy", "commonsense_qa", "bbh"]
        return
    assert cfg.data._target_ in (
        "datamodules.reasoning.ReasoningQuestionDataModule",
        "datamodules.benchmarks.BenchmarkQuestionDataModule",  # the registered benchmarks (issue #16)
    )
    assert cfg.backend.name in ("hf", "openai_http", "vllm")
    build_spec(cfg)  # the method and prompt nodes are valid evaluation settings


def test_defaults_are_self_agreement_with_the_papers_settings(tmp_path) -> None:
    from runners.reasoning import build_spec, headline_metric

    cfg = compose_cfg([], tmp_path, config_name="eval")
    spec = build_spec(cfg)
    assert spec.methods == ("sa",) and spec.num_paths == 5 and spec.ks == (5,)
    assert spec.sampling.temperature == 0.7 and spec.sampling.seed == cfg.seed
    assert spec.prompt.agreement_template == AGREEMENT_TEMPLATE
    assert spec.prompt.agreement_path_template == AGREEMENT_PATH_TEMPLATE
    assert spec.prompt.chat and spec.prompt.question_type_known and spec.prompt.answer_format_known
    assert headline_metric(cfg) == "reasoning/sa@5/accuracy"
    assert cfg.paths.output_dir == str(tmp_path) and cfg.cache_dir == f"{tmp_path}/cache"

    every = build_spec(compose_cfg(["decoding=all", "decoding.ks=[1,3,5]"], tmp_path, config_name="eval"))
    assert every.methods == ("greedy", "sc", "sa") and every.ks == (1, 3, 5)
    grid = compose_cfg(
        ["task=reasoning_mixed", "prompt.answer_format_known=false"], tmp_path, config_name="eval"
    )
    spec = build_spec(grid)
    assert not spec.prompt.question_type_known and not spec.prompt.answer_format_known
    assert grid.data.path.endswith("reasoning/mixed_test.jsonl")


def test_config_problems_are_reported_together(tmp_path) -> None:
    from runners.reasoning import validate_eval_config
    from utils.errors import ConfigError

    cfg = compose_cfg(
        ["decoding.num_paths=0", "trainer=fsdp", "backend=openai_http", "task.extraction_mode=fuzzy"],
        tmp_path,
        config_name="eval",
    )
    with pytest.raises(ConfigError) as err:
        validate_eval_config(cfg)
    text = str(err.value)
    assert "backend.base_url is required" in text and "backend.model is required" in text
    assert "use trainer=ddp" in text
    assert "decoding.num_paths (m, sampled paths per question) must be an integer >= 1, got 0" in text
    assert "extraction_mode='fuzzy'" in text
    cfg = compose_cfg(["+trainer.strategy=fsdp"], tmp_path, config_name="eval")
    with pytest.raises(ConfigError, match="use trainer=ddp"):
        validate_eval_config(cfg)


def _no_template_model(tmp_path, tiny_hf_dir):
    """A copy of the tiny model folder whose tokenizer has no chat template."""
    import shutil

    folder = tmp_path / "no_template"
    shutil.copytree(tiny_hf_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_bad_input_gives_one_error_line_and_exit_2(tmp_path, tiny_hf_dir, capsys) -> None:
    from eval import evaluate
    from utils.entrypoint import run_main

    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text('{"question": "1 + 1?", "answer": "2"}\n{"question": "2 + 2?", "solution": "4"}\n')
    cases = {
        "answer": (
            [f"data.path={no_answer}"],
            r"^error: .*no_answer\.jsonl:2: missing field 'answer' \(keys: \['question', 'solution'\]\)",
        ),
        "template": (
            ["model=hf", f"model.pretrained={_no_template_model(tmp_path, tiny_hf_dir)}"],
            r"^error: tokenizer .*no_template' has no chat template, but prompt.chat=true: give one with "
            r"model.chat_template=",
        ),
        "m": (["decoding.num_paths=0"], r"^error: invalid config: decoding.num_paths \(m, sampled paths"),
    }
    for name, (overrides, pattern) in cases.items():
        out = tmp_path / name
        cfg = compose_cfg([*overrides, "print_config=false", "progress=false"], out, config_name="eval")
        with pytest.raises(SystemExit) as exit_info:
            run_main(cfg, evaluate)
        assert exit_info.value.code == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(pattern, err[0]), (name, err)
        assert not (out / "results.json").exists() and not (out / "samples.jsonl").exists()
