"""scripts/rlmec_pipeline.sh's start-up checks and scripts/rlmec_summary.py's table (the pipeline's own
steps are covered stage by stage in tests/test_rlmec_stages.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "rlmec_pipeline.sh"


def _pipeline(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SIZE": "hf"}, "error: SIZE=hf needs POLICY=<the SFT policy's model folder>"),
        ({"SIZE": "huge"}, "error: SIZE must be tiny or hf, got 'huge'"),
        (
            {"SIZE": "hf", "POLICY": "/nonexistent/policy"},
            "error: POLICY=/nonexistent/policy is not a model folder",
        ),
    ],
)
def test_pipeline_refuses_bad_settings_in_one_line_before_doing_anything(tmp_path, env, message):
    proc = _pipeline(tmp_path, **env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(message)
    assert not (tmp_path / "out").exists()


def _results(folder: Path, accuracy: float) -> None:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"metrics": {"greedy": {"accuracy": accuracy}}}))


def test_summary_table_means_over_seeds_and_reports_the_rl_data(tmp_path):
    _results(tmp_path / "eval_sft", 0.5)
    _results(tmp_path / "eval_rlmec_s1", 0.4)
    _results(tmp_path / "eval_rlmec_s2", 0.6)
    _results(tmp_path / "eval_rlmec_nolir_s1", 0.25)
    (tmp_path / "eval_dpo_s1").mkdir()  # unfinished eval: no results.json, left out
    (tmp_path / "rl_data").mkdir()
    (tmp_path / "rl_data" / "summary.json").write_text(
        json.dumps(
            {
                "records": 10,
                "nonzero_reward_frac": 0.25,
                "mean_reward_correct": 0.4,
                "mean_reward_wrong": -0.01,
            }
        )
    )
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "rlmec_summary.py"), str(tmp_path), "--markdown"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [
        "| method | seed 1 | seed 2 | mean |",
        "|---|---|---|---|",
        "| sft | 0.500 | 0.500 | 0.500 |",
        "| rlmec | 0.400 | 0.600 | 0.500 |",
        "| rlmec_nolir | 0.250 |  | 0.250 |",
        "RL data: 10 samples, non-zero-reward fraction 0.250, mean reward correct 0.4, wrong -0.01",
    ]
