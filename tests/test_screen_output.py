"""What a user sees on screen: each log message once, no cloud-logger advertisement, and a closing line
with where the run went, the first and last loss and the time (``callbacks.run_summary.closing_line``)."""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter

import pytest

from callbacks.run_summary import closing_line
from tests.helpers import run_script
from utils.run_folder import folder_closing_line

RECORD = {
    "status": "finished",
    "steps_this_run": 288,
    "steps_recorded": 288,
    "wall_time_s": 23.14,
    "first_loss": 6.60612,
    "last_loss": 0.302849,
    "output_dir": "/work/q/outputs/train/runs/2026-12-07_19-14-34",
    "hf_model": "/work/q/outputs/train/runs/2026-12-07_19-14-34/hf_model",
}


def test_closing_line_names_the_folder_the_files_the_loss_and_the_time():
    assert closing_line(RECORD, cwd="/work/q") == (
        "done: 288 steps in 23.1 s; loss 6.606 -> 0.3028 (mean of the first/last 10 steps); "
        "run folder outputs/train/runs/2026-12-07_19-14-34/ (summary.json, hf_model/)"
    )


def test_closing_line_outside_the_working_folder_without_export_and_interrupted():
    record = {**RECORD, "status": "interrupted", "steps_this_run": 1, "steps_recorded": 3, "hf_model": None}
    assert closing_line(record, cwd="/elsewhere") == (
        "interrupted: 1 step in 23.1 s; loss 6.606 -> 0.3028 (mean of the first/last 3 steps); "
        "run folder /work/q/outputs/train/runs/2026-12-07_19-14-34/ (summary.json); "
        "no hf_model/ (export=false or not exported)"
    )
    no_steps = {k: v for k, v in record.items() if k not in ("first_loss", "last_loss")}
    assert "loss" not in closing_line({**no_steps, "steps_this_run": 0}, cwd="/elsewhere")


def test_eval_and_generate_closing_line_names_the_time_the_metric_and_the_folder(tmp_path):
    run = tmp_path / "runs" / "r1"
    (run / ".hydra").mkdir(parents=True)
    (run / "cache").mkdir()
    for name in ("results.json", "samples.jsonl", "eval.log", "summary.json", "z.jsonl"):
        (run / name).write_text("{}")
    line = folder_closing_line(run, 12.34, ("accuracy", 0.48512), cwd=str(tmp_path))
    assert line == (
        "done in 12.3 s; accuracy 0.4851; run folder runs/r1/ "
        "(cache/, results.json, samples.jsonl, summary.json, ... (5 in all))"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert folder_closing_line(empty, 0.04, cwd="/elsewhere") == f"done in 0.0 s; run folder {empty}/"


HYDRA_LINE = re.compile(r"^\[[\d\- :,]+\]\[([\w.]+)\]\[(\w+)\] - (.*)$")


@pytest.mark.slow
def test_a_run_prints_each_message_once_and_ends_on_the_closing_line(tmp_path):
    """``python train.py`` as ``make train`` runs it (a fresh process, so Lightning is imported after
    Hydra set up logging), 3 steps with the progress bar off."""
    run_dir = tmp_path / "run"
    args = [
        "debug=default",
        "trainer.max_steps=3",
        "logger=csv",
        "print_config=false",
        "optimized_metric=train/loss",
    ]
    start = time.monotonic()
    done = run_script("train.py", [*args, "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"])
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    screen = done.stdout + done.stderr
    assert "litlogger" not in screen and "Tip:" not in screen
    assert "set_vital" not in screen and "LeafSpec" not in screen
    assert not re.search(r"^(INFO|WARNING): ", screen, re.M), screen[-3000:]  # Lightning's own format
    messages = [m.group(3) for m in map(HYDRA_LINE.match, done.stdout.splitlines()) if m]
    assert "GPU available: False, used: False" in messages  # Lightning's, in Hydra's format
    assert [m for m, n in Counter(messages).items() if n > 1] == []
    assert sum("GPU available" in line for line in screen.splitlines()) == 1
    log_file = (run_dir / "debug.log").read_text()  # Lightning's lines reach the run's log file too
    assert log_file.count("GPU available: False, used: False") == 1
    with open(run_dir / "csv" / "metrics.csv") as f:
        losses = [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert len(losses) == 3  # one row per step (log_every_n_steps=1): 3 steps, so each end's mean is all 3
    seconds = json.loads((run_dir / "summary.json").read_text())["wall_time_s"]
    assert 0 < seconds < elapsed
    mean = sum(losses) / 3
    want = (
        f"done: 3 steps in {seconds:.1f} s; loss {mean:.4g} -> {mean:.4g} (mean of the first/last 3 steps); "
        f"run folder {run_dir}/ (summary.json, hf_model/)"
    )
    assert messages[-1] == want  # the last line printed
    assert (run_dir / "hf_model" / "config.json").is_file() and (run_dir / "summary.json").is_file()
