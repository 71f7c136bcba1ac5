"""The command line: multirun sweeps, and bad input giving one clear cause, a non-zero exit, and no
overwritten files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

FAST = [
    "debug=default",
    "logger=csv",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def _popen(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "QUARTET_ROOT": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_multirun_sweep_gives_one_folder_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    p = _popen(["-m", *FAST, "module.optimizer.lr=1e-3,3e-3", f"hydra.sweep.dir={sweep}"])
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in range(2)]
    assert all(s["global_step"] == 2 for s in summaries)
    configs = [(sweep / str(i) / ".hydra" / "overrides.yaml").read_text() for i in range(2)]
    assert "module.optimizer.lr=0.001" in configs[0] and "module.optimizer.lr=0.003" in configs[1]


def _bad_data(tmp_path):
    files = {
        "malformed": (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
            '{"messages": [oops]}\n'
        ),
        "role": '{"messages": [{"role": "wizard", "content": "hi"}]}\n',
        "empty": '{"messages": []}\n',
    }
    paths = {}
    for name, text in files.items():
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text(text)
    return paths


@pytest.mark.slow
def test_bad_input_gives_one_line_cause_and_overwrites_nothing(tmp_path):
    data = _bad_data(tmp_path)
    # A finished run folder that a failed re-run must leave untouched.
    previous = tmp_path / "previous"
    (previous / ".hydra").mkdir(parents=True)
    (previous / ".hydra" / "config.yaml").write_text("saved: config\n")
    (previous / "summary.json").write_text('{"kept": true}\n')
    cases = {
        "missing": ([f"data.path={tmp_path}/nope.jsonl"], r"data.path=.*nope.jsonl: file not found"),
        "malformed": ([f"data.path={data['malformed']}"], "malformed.jsonl:2: malformed JSON"),
        "role": ([f"data.path={data['role']}"], "role.jsonl:1: turn 0 has unknown role 'wizard'"),
        "empty": ([f"data.path={data['empty']}"], "empty.jsonl:1: empty conversation"),
        "group": (["model=gpt9"], "Could not find 'model/gpt9'"),
        "key": (["trainer.max_stepz=3"], "Could not override 'trainer.max_stepz'"),
    }
    procs = {name: _popen([*FAST, *args, f"hydra.run.dir={previous}"]) for name, (args, _) in cases.items()}
    for name, p in procs.items():
        _, err = p.communicate(timeout=600)
        expected = cases[name][1]
        assert p.returncode != 0, name
        if name in ("group", "key"):
            assert expected in err and "hint:" in err, (name, err[-2000:])
        else:
            assert p.returncode == 2
            lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
            assert len(lines) == 1 and re.search(expected, lines[0]), (name, err[-2000:])
            assert "Traceback" not in err
    assert (previous / ".hydra" / "config.yaml").read_text() == "saved: config\n"
    assert (previous / "summary.json").read_text() == '{"kept": true}\n'
    assert not (previous / "checkpoints").exists()


@pytest.mark.slow
def test_optuna_search_minimises_the_optimized_metric(tmp_path):
    import yaml

    sweep = tmp_path / "optuna"
    p = _popen(
        [
            "-m",
            "hparams_search=optuna",
            *FAST,
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=1",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    losses = [
        json.loads((sweep / str(i) / "summary.json").read_text())["metrics"]["val/loss"] for i in range(2)
    ]
    assert results["best_value"] == pytest.approx(min(losses))
