"""scripts/parrot_pipeline.sh's start-up checks and scripts/parrot_summary.py's table (the steps are
covered one by one: test_parrot_stage.py, test_capo_negatives.py, test_mt_bench_*.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SIZE": "huge"}, "error: SIZE must be tiny or hf, got 'huge'"),
        ({"SIZE": "hf"}, "error: SIZE=hf needs BASE=<model folder>"),
        ({"SIZE": "hf", "BASE": "/nonexistent"}, "error: BASE=/nonexistent is not a model folder"),
    ],
)
def test_pipeline_refuses_bad_settings_in_one_line(tmp_path, env, message):
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "parrot_pipeline.sh"), str(tmp_path / "out")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.startswith(message)
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_hf_pipeline_needs_a_real_judge(tmp_path, tiny_hf_dir):
    env = {"SIZE": "hf", "BASE": str(tiny_hf_dir), "ANSWER": str(tiny_hf_dir)}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "parrot_pipeline.sh"), str(tmp_path / "out")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: SIZE=hf needs JUDGE=")


def test_summary_table(tmp_path):
    def results(name, body):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(body))

    results("mt_bench_chat", {"score": 3.0, "per_turn": {"1": {"mean": 4.0}, "2": {"mean": 2.0}}})
    results("mt_bench_capo", {"score": 3.5, "per_turn": {"1": {"mean": 4.0}, "2": {"mean": 3.0}}})
    turn = {"win": 1, "tie": 1, "loss": 0, "error": 0, "win_rate": 0.5, "win_rate_adjusted": 0.75}
    pair = {**turn, "per_turn": {"2": turn}}
    results("mt_bench_pair", {"pairwise": {"chat_capo": pair}})
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "parrot_summary.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines[2] == "| 1 | 4.00 | 4.00 | - | - | - | - | - | - |"
    assert lines[3] == "| 2 | 2.00 | 3.00 | 1 | 1 | 0 | 0 | 0.50 | 0.75 |"
    assert lines[4] == "| all | 3.00 | 3.50 | 1 | 1 | 0 | 0 | 0.50 | 0.75 |"
    assert json.loads(lines[-1])["capo_vs_chat"]["win_rate"] == 0.5
