"""eval.py task=lm_eval: lm-eval's results in Quartet's layout, the per-task expert counter of a Top-P MoE
model, the start-up errors, and the same accuracies as the ``lm_eval`` command on the same model and task.

The tasks are the test's own lm-eval YAMLs over local JSON lines (``dataset_path: json``), found
through ``task.include_path``: nothing is fetched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from evaluation.lm_eval_bridge import (
    ExpertCounter,
    merge_lm_eval_results,
    quartet_results,
    task_metrics,
)
from tests.helpers import compose_cfg
from utils.errors import ConfigError, QuartetError

ROOT = Path(__file__).resolve().parents[1]
# (stem, options, gold): written here for the tests.
FACTS = [
    ("The cat sat on the", ["mat", "sky", "river", "engine"], 0),
    ("Water freezes when it is", ["cold", "loud", "sweet", "round"], 0),
    ("The sun rises in the", ["west", "east", "cup", "shoe"], 1),
    ("A week has seven", ["apples", "days", "wheels", "clouds"], 1),
    ("Birds can", ["fly", "melt", "read", "boil"], 0),
    ("Ice cream is usually", ["hot", "metal", "cold", "loud"], 2),
    ("We read books in the", ["library", "oven", "ocean", "tyre"], 0),
    ("A square has four", ["sides", "eyes", "songs", "rivers"], 0),
    ("Fish live in", ["trees", "water", "fire", "paper"], 1),
    ("Snow is", ["black", "white", "green", "orange"], 1),
    ("At night we see the", ["moon", "carpet", "lemon", "spoon"], 0),
    ("Grass is", ["purple", "blue", "green", "red"], 2),
]
QUESTIONS = [
    ("What is two plus two?", ["four", "five", "three"], 0),
    ("Which animal barks?", ["cat", "dog", "fish"], 1),
    ("What colour is the sky on a clear day?", ["green", "red", "blue"], 2),
    ("How many legs does a spider have?", ["eight", "six", "four"], 0),
    ("What do bees make?", ["milk", "honey", "silk"], 1),
]
TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{text}"
doc_to_target: gold
doc_to_choice: options
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def write_task(folder: Path, name: str, rows: list, text: str) -> None:
    """An lm-eval multiple-choice task YAML over a local JSONL file (``{stem, options, gold}`` rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"stem": s, "options": o, "gold": g}) + "\n" for s, o, g in rows))
    (folder / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data, text=text))


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    write_task(folder, "quartet_facts", FACTS, "{{stem}}")
    write_task(folder, "quartet_questions", QUESTIONS, "Question: {{stem}}\\nAnswer:")
    return folder


def eval_cfg(tmp_path: Path, model: list[str], tasks: str, task_dir: Path | None, *extra: str):
    overrides = ["task=lm_eval", f"task.tasks=[{tasks}]", *model, "print_config=false", *extra]
    if task_dir is not None:
        overrides += [f"task.include_path={task_dir}", "task.include_defaults=false"]
    return compose_cfg(overrides, tmp_path, config_name="eval")


# ---- pure parts ------------------------------------------------------------------------------------
def aux(mask: list[list[int]], token_mask: list[int] | None, layer: int) -> SimpleNamespace:
    return SimpleNamespace(
        dispatch_mask=torch.tensor(mask, dtype=torch.bool),
        token_mask=None if token_mask is None else torch.tensor(token_mask, dtype=torch.bool),
        layer_idx=layer,
    )


def test_expert_counter_sums_real_tokens_per_layer_over_the_passes_it_sees():
    class FakeMoE(torch.nn.Module):
        def forward(self, aux_list):
            return SimpleNamespace(router_aux=aux_list)

    model = FakeMoE()
    first = [
        aux(
            [[1, 1, 0], [1, 0, 0], [1, 1, 1]], [1, 1, 0], 0
        ),  # padding row (3 experts) left out: 3 pairs / 2 tokens
        aux([[1, 0, 0], [0, 1, 0], [1, 1, 0]], None, 2),  # 4 pairs / 3 tokens
    ]
    with ExpertCounter(model) as counter:
        model(first)
        model([aux([[1, 1, 1]], None, 0)])  # layer 0 now 6 pairs / 3 tokens
    model([aux([[1, 1, 1, 1]], None, 0)])  # after the block: not counted
    s = counter.summary()
    assert s["per_layer"] == {"layer0": 2.0, "layer2": 4 / 3}
    assert s["experts_per_token"] == pytest.approx((2.0 + 4 / 3) / 2, abs=0)
    assert s["tokens"] == 3
    dense = torch.nn.Linear(2, 2)
    with ExpertCounter(dense) as none:
        dense(torch.zeros(1, 2))
    assert none.summary() is None


LM_RESULTS = {
    "results": {
        "grp": {"alias": "grp", "acc,none": 0.5, "acc_stderr,none": 0.1},
        "sub_a": {"alias": " - sub_a", "acc,none": 0.25, "acc_stderr,none": "N/A", "acc_norm,none": 0.75},
        "gen": {"alias": "gen", "exact_match,get-answer": 0.125, "exact_match_stderr,get-answer": 0.0625},
    },
    "groups": {"grp": {"alias": "grp", "acc,none": 0.5, "acc_stderr,none": 0.1}},
    "n-samples": {"sub_a": {"original": 40, "effective": 8}, "gen": {"original": 3, "effective": 3}},
    "configs": {"sub_a": {}, "gen": {}},
    "config": {"batch_size": 1},
}


def test_results_in_quartet_layout():
    r = quartet_results(LM_RESULTS, {"grp": ["grp"], "gen": ["gen"]}, {"grp": None, "gen": None})
    assert r["metrics"] == {
        "sub_a": {"acc": 0.25, "acc_stderr": None, "acc_norm": 0.75, "alias": "sub_a", "num_samples": 8},
        "gen": {
            "exact_match,get-answer": 0.125,
            "exact_match_stderr,get-answer": 0.0625,
            "alias": "gen",
            "num_samples": 3,
        },
    }
    assert list(r["metrics"]["sub_a"])[:3] == ["acc", "acc_stderr", "acc_norm"]
    assert r["groups"] == {"grp": {"acc": 0.5, "acc_stderr": 0.1, "alias": "grp"}}
    assert "experts_per_token" not in r
    moe = quartet_results(LM_RESULTS, {"gen": ["gen"]}, {"gen": {"experts_per_token": 1.5, "tokens": 4}})
    assert moe["experts_per_token"] == {"gen": 1.5} and moe["routing"]["gen"]["tokens"] == 4
    assert task_metrics({"acc,none": float("nan")}) == {"acc": None}
    merged = merge_lm_eval_results(
        [LM_RESULTS, {"results": {"x": {}}, "configs": {"x": {}}, "config": {"b": 2}}]
    )
    assert list(merged["results"]) == ["grp", "sub_a", "gen", "x"] and merged["config"] == {"b": 2}


# ---- start-up errors --------------------------------------------------------------------------------
def test_missing_include_path_and_missing_lm_eval_are_one_line_errors(tmp_path, tiny_hf_dir, monkeypatch):
    from runners.lm_eval import run

    model = ["model=hf", f"model.pretrained={tiny_hf_dir}"]
    cfg = eval_cfg(tmp_path, model, "x", None, f"task.include_path={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match=r"task.include_path=.*nowhere: does not exist"):
        run(cfg)
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(
        QuartetError, match=r"needs lm-eval, which is not installed.*pip install lm_eval==0.4.13"
    ):
        run(eval_cfg(tmp_path, model, "x", None))
    assert not (tmp_path / "results.json").exists()


def test_unknown_task_is_named_before_the_model_loads(tmp_path, task_dir):
    from runners.lm_eval import run

    model = ["model=hf", f"model.pretrained={tmp_path / 'not_a_model'}"]  # never loaded
    cfg = eval_cfg(tmp_path, model, "quartet_facts,no_such_task", task_dir)
    with pytest.raises(ConfigError, match=r"unknown lm-eval task\(s\) \['no_such_task'\]"):
        run(cfg)


# ---- a Top-P MoE export: experts per token for each task ---------------------------------------------
@pytest.fixture(scope="module")
def moe_folder(tmp_path_factory, tokenizer) -> Path:
    """A random tiny Top-P MoE saved as Quartet exports it (weights, tokenizer, modeling code, auto_map);
    a wide router init makes the experts per token vary from token to token."""
    from models import build_model, save_model_code

    torch.manual_seed(0)
    router = {"kind": "top_p", "top_p": 0.7, "min_experts": 1, "init_std": 1.0}
    cfg = {"kind": "moe", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1}
    cfg.update(moe_intermediate_size=32, num_experts=4, router=router, max_position_embeddings=256)
    model = build_model(cfg, tokenizer)
    out = tmp_path_factory.mktemp("moe_export")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    assert save_model_code(model, out)
    return out


def recount(model, lm, samples_file: Path) -> float:
    """Experts per token by hand: each distinct input lm-eval runs (context + continuation minus its last
    token) through the model once, dispatch masks summed per layer, then the mean over layers."""
    inputs = set()
    for line in samples_file.read_text().splitlines():
        for arg in json.loads(line)["arguments"].values():
            context, continuation = lm._encode_pair(arg["arg_0"], arg["arg_1"])
            inputs.add(tuple(context + continuation)[:-1])
    pairs, tokens = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for ids in inputs:
            out = model(torch.tensor([ids]))
            for i, a in enumerate(out.router_aux):
                pairs[i] += a.dispatch_mask.sum()
                tokens[i] += a.dispatch_mask.shape[0]
    return float((pairs / tokens).mean())


@pytest.mark.slow
def test_moe_export_reports_experts_per_token_for_each_task(tmp_path, task_dir, moe_folder):
    from lm_eval.models.huggingface import HFLM

    from eval import evaluate
    from models import build_model, load_tokenizer

    model = ["model=hf", f"model.pretrained={moe_folder}"]
    metrics = evaluate(eval_cfg(tmp_path, model, "quartet_facts,quartet_questions", task_dir))
    results = json.loads((tmp_path / "results.json").read_text())
    k = results["experts_per_token"]
    assert set(k) == {"quartet_facts", "quartet_questions"} and k["quartet_facts"] != k["quartet_questions"]
    assert metrics["lm_eval/quartet_facts/experts_per_token"] == k["quartet_facts"]
    loaded = build_model({"kind": "hf", "pretrained": str(moe_folder), "dtype": "float32"}).eval()
    assert type(loaded).__module__ == "models.quartet_moe.modeling_quartet_moe"  # no trust_remote_code
    lm = HFLM(pretrained=loaded, tokenizer=load_tokenizer(str(moe_folder)), backend="causal", batch_size=1)
    for task in k:
        (samples,) = (tmp_path / "lm_eval").rglob(f"samples_{task}_*.jsonl")
        assert k[task] == pytest.approx(recount(loaded, lm, samples), rel=1e-12)
        assert results["routing"][task]["per_layer"].keys() == {"layer0", "layer1"}
    assert results["metrics"]["quartet_facts"]["num_samples"] == len(FACTS)


# ---- the same numbers as the lm_eval command ----------------------------------------------------------
def read_samples(folder: Path, task: str) -> list:
    (path,) = folder.rglob(f"samples_{task}_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["doc_id"], r["resps"]) for r in sorted(rows, key=lambda r: r["doc_id"])]


@pytest.mark.slow
def test_same_accuracies_as_the_lm_eval_command(tmp_path, task_dir, tiny_hf_dir):
    from eval import evaluate

    task = "quartet_facts"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cli_out = tmp_path / "cli"
    command = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={tiny_hf_dir}"]
    command += ["--device", "cpu", "--tasks", task, "--include_path", str(task_dir)]
    command += ["--output_path", str(cli_out), "--log_samples"]
    cli = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ours = tmp_path / "ours"
    evaluate(eval_cfg(ours, ["model=hf", f"model.pretrained={tiny_hf_dir}"], task, task_dir))
    log = cli.communicate(timeout=600)[0].decode(errors="replace")
    assert cli.returncode == 0, log[-3000:]
    (cli_file,) = cli_out.rglob("results_*.json")
    theirs = json.loads(cli_file.read_text())["results"][task]
    mine = json.loads((ours / "results.json").read_text())["metrics"][task]
    for metric in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr"):
        assert mine[metric] == theirs[f"{metric},none"], metric
    assert 0 < mine["acc"] < 1 and mine["num_samples"] == len(FACTS)
    assert read_samples(ours / "lm_eval", task) == read_samples(cli_out, task)  # every log-likelihood
