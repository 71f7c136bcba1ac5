"""Issue 11 §3 reliability suite: ``kill -9`` at a seeded random step (3 seeds) and SIGTERM mid-run, then
resume, for every training module (SFT, CaPO, TopPMoE, RLMEC, online RL with GRPO).

Each run is ``train.py`` in its own process (``tests.helpers.start_script``), killed with a real signal.
After the resume (``ckpt_path=last`` in the same folder after ``kill -9``; ``resume_dir=<run>`` after
SIGTERM), ``last.ckpt`` must hold bitwise the uninterrupted run's weights, optimizer and scheduler
state, and ``metrics.csv`` the uninterrupted run's rows: every step once, with equal values.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import FAST, ROOT, ScriptRun, start_script
from tests.rlmec_fixtures import rl_records, write_jsonl
from tests.test_online_rl_module import write_questions

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

STEPS = 12  # N: every module's data is a few batches an epoch, so the runs cross epoch boundaries
EVERY = 2  # periodic checkpoint every 2 steps: a kill between two of them makes the resume redo a step
PACE = 0.25  # seconds per step from the kill step on: the signal lands before the run ends
SEEDS = (0, 1, 2)
MODULES = ("sft", "capo", "topp_moe", "rlmec", "grpo")
TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2"]
COMMON = [
    "debug=default",  # callbacks=minimal, a CSV row every step
    "logger=csv",
    f"trainer.max_steps={STEPS}",
    "trainer.max_epochs=100",
    "trainer.limit_val_batches=0",
    f"callbacks.model_checkpoint.every_n_train_steps={EVERY}",
    "export=false",
    *FAST,
]
TIMEOUT_S = 300


def _head(src: Path, dst: Path, n: int) -> Path:
    dst.write_text("".join(src.read_text().splitlines(True)[:n]))
    return dst


class Suite:
    """The small data sets, the per-module arguments and the cached uninterrupted runs."""

    def __init__(self, root: Path, tokenizer: Any):
        self.root = root
        data = ROOT / "data"
        self.data = {
            "sft": _head(data / "chat" / "dialogues.jsonl", root / "chats.jsonl", 20),  # 5 batches
            "capo": _head(data / "capo" / "pairs.jsonl", root / "pairs.jsonl", 20),  # 5 batches
            "topp_moe": _head(data / "corpus" / "train.txt", root / "corpus.txt", 8),
            "rlmec": write_jsonl(root / "rl.jsonl", rl_records(tokenizer, 8)),  # 4 batches of 2
            "grpo": write_questions(root / "questions.jsonl"),  # 4 batches of 2 prompts
        }
        self._references: dict[str, Path] = {}

    def args(self, module: str, run_dir: Path) -> list[str]:
        path = self.data[module]
        per_module = {
            "sft": ["model=tiny", *TINY, f"data.path={path}", "data.val_fraction=0", "data.max_length=128"],
            "capo": [
                "experiment=capo_tiny",
                *TINY,
                f"data.path={path}",
                "data.val_fraction=0",
                "data.max_length=128",
                "module.reference=precomputed",
            ],
            "topp_moe": [
                "experiment=moe_tiny_topp",
                *TINY,
                "model.num_experts=4",
                "model.moe_intermediate_size=32",
                f"data.path={path}",
                "data.val_path=null",
                "data.val_fraction=0",
                "data.block_size=32",
            ],
            "rlmec": [
                "model=tiny",
                *TINY,
                "module=rlmec",
                "data=rlmec",
                f"data.path={path}",
                "data.batch_size=2",
                "module.optimizer.lr=1e-3",
            ],
            "grpo": [  # online RL: the sampling stream's counter is in the checkpoint
                "experiment=grpo_tiny",
                *TINY,
                f"data.path={path}",
                "data.batch_size=2",
                "module.sampling.max_new_tokens=16",
                "module.optimizer.lr=1e-3",
            ],
        }[module]
        return [*per_module, *COMMON, f"paths.cache_dir={self.root / 'cache'}", f"hydra.run.dir={run_dir}"]

    def reference(self, module: str) -> Path:
        """The uninterrupted run's folder (trained once per module)."""
        if module not in self._references:
            run_dir = self.root / f"reference_{module}"
            assert finish(self.args(module, run_dir), run_dir) == 0, read_err(run_dir)
            self._references[module] = run_dir
        return self._references[module]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Suite:
    return Suite(tmp_path_factory.mktemp("reliability_kill"), tokenizer)


# ---- running and signalling ---------------------------------------------------------------------------
def log_prefix(run_dir: Path) -> Path:
    return run_dir.parent / f"{run_dir.name}.log"


def read_err(run_dir: Path) -> str:
    err = Path(f"{log_prefix(run_dir)}.err")
    return err.read_text()[-3000:] if err.exists() else ""


def finish(args: list[str], run_dir: Path) -> int:
    """Run train.py to its end; return its exit status."""
    return start_script("train.py", args, log_prefix(run_dir)).wait(TIMEOUT_S)


def signal_at_step(
    args: list[str], run_dir: Path, step: int, delay: float, signum: int, stall_after: int
) -> int:
    """Start train.py, wait until ``step`` optimizer steps are done (and their checkpoints written),
    wait ``delay`` more seconds, send ``signum``; return the exit status (``-signum`` if it killed it).
    From ``step`` on, the run pauses ``PACE`` s per step, and after ``stall_after`` more steps it waits
    for the signal, so it can't end first."""
    progress = run_dir.parent / f"{run_dir.name}.progress"
    paced = [
        *args,
        "+callbacks.progress._target_=tests.hardening_helpers.StepProgress",
        f"+callbacks.progress.path={progress}",
        f"+callbacks.progress.sleep={PACE}",
        f"+callbacks.progress.slow_from={step}",
        f"+callbacks.progress.stall_from={step + stall_after}",
    ]
    proc = start_script("train.py", paced, log_prefix(run_dir))

    def reached() -> bool:
        text = progress.read_text() if progress.exists() else ""
        return text.isdigit() and int(text) >= step

    wait_until(proc, reached, f"step {step}", run_dir)
    time.sleep(delay)
    os.kill(proc.pid, signum)
    return proc.wait(TIMEOUT_S)


def wait_until(proc: ScriptRun, condition: Callable[[], bool], what: str, run_dir: Path) -> None:
    deadline = time.time() + TIMEOUT_S
    while not condition():
        assert proc.poll() is None, f"train.py ended before {what}:\n{read_err(run_dir)}"
        assert time.time() < deadline, f"train.py did not reach {what} within {TIMEOUT_S} s"
        time.sleep(0.01)


# ---- what a resumed run must equal ---------------------------------------------------------------------
def final_state(run_dir: Path) -> dict[str, Any]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    keys = ("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch")
    return {k: ckpt[k] for k in keys}


def assert_bitwise(a: Any, b: Any, where: str = "last.ckpt") -> None:
    """Equal trees; tensors equal bit for bit (same dtype, shape and values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            assert_bitwise(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_bitwise(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    """The CSV rows without wall-clock columns (online RL's ``*_tokens_per_s``), which no rerun repeats."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if not k.endswith("_per_s")} for row in csv.DictReader(f)]


def assert_resumed_like_reference(run_dir: Path, reference: Path) -> None:
    assert_bitwise(final_state(run_dir), final_state(reference))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == STEPS
    assert summary["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    expected = csv_rows(reference)
    steps = [int(r["step"]) for r in expected if r["train/loss"]]
    assert steps == list(range(STEPS))  # the reference logs every step once
    assert csv_rows(run_dir) == expected  # no step twice, none missing, the same values
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if ".tmp-" in p.name]
    assert not leftovers, f"temporary files left in checkpoints/: {leftovers}"
    assert not (run_dir / ".lock").exists()


# ---- the tests ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("module", MODULES)
def test_kill_9_then_ckpt_path_last_is_bitwise_exact(tmp_path: Path, suite: Suite, module: str, seed: int):
    rng = random.Random(f"{module}-{seed}")
    step = rng.randint(2, STEPS - 4)  # kill after this many steps...
    delay = rng.uniform(0, 1.5 * PACE)  # ...plus this long: in the pause, the next step or its save
    run_dir = tmp_path / "run"
    args = suite.args(module, run_dir)
    reference = suite.reference(module)

    code = signal_at_step(args, run_dir, step, delay, signal.SIGKILL, stall_after=2)
    assert code == -signal.SIGKILL, f"exit {code}, not killed:\n{read_err(run_dir)}"
    assert not (run_dir / "summary.json").exists()  # kill -9: no chance to write anything
    assert (run_dir / ".lock").exists()  # left behind: the resume must take it over as stale
    saved = final_state(run_dir)["global_step"]  # the previous last.ckpt survives a kill mid-save
    assert step - step % EVERY <= saved <= step + 2 and saved % EVERY == 0

    assert finish([*args, "ckpt_path=last"], run_dir) == 0, read_err(run_dir)
    assert_resumed_like_reference(run_dir, reference)


@pytest.mark.parametrize("module", MODULES)
def test_kill_9_in_the_middle_of_saving_last_ckpt_keeps_the_previous_one(
    tmp_path: Path, suite: Suite, module: str
):
    step = 3 * EVERY  # a checkpoint step: its last.ckpt write stalls halfway, and the kill lands there
    run_dir = tmp_path / "run"
    args = suite.args(module, run_dir)
    reference = suite.reference(module)
    marker = tmp_path / "saving"
    stall = [
        "+callbacks.stall._target_=tests.hardening_helpers.StallLastCheckpointSave",
        f"+callbacks.stall.step={step}",
        f"+callbacks.stall.marker={marker}",
    ]
    proc = start_script("train.py", [*args, *stall], log_prefix(run_dir))
    wait_until(proc, marker.exists, f"the save of last.ckpt at step {step}", run_dir)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(TIMEOUT_S) == -signal.SIGKILL

    checkpoints = run_dir / "checkpoints"
    half_written = list(checkpoints.glob(".last.ckpt.tmp-*"))
    assert len(half_written) == 1 and half_written[0].stat().st_size > 0
    assert (checkpoints / f"step{step:06d}.ckpt").is_file()  # the periodic one went first
    assert final_state(run_dir)["global_step"] == step - EVERY  # last.ckpt: the previous one, whole

    assert finish([*args, "ckpt_path=last"], run_dir) == 0, read_err(run_dir)
    assert_resumed_like_reference(run_dir, reference)  # the half-written file is gone too


@pytest.mark.parametrize("module", MODULES)
def test_sigterm_then_resume_dir_is_bitwise_exact(tmp_path: Path, suite: Suite, module: str):
    step = random.Random(f"{module}-sigterm").randint(2, STEPS - 4)
    run_dir = tmp_path / "run"
    reference = suite.reference(module)

    code = signal_at_step(suite.args(module, run_dir), run_dir, step, PACE / 2, signal.SIGTERM, stall_after=1)
    assert code == 128 + signal.SIGTERM, f"exit {code}:\n{read_err(run_dir)}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["status"] == "interrupted"
    saved = final_state(run_dir)["global_step"]  # saved at the step the signal arrived in
    assert step <= saved == summary["global_step"] <= step + 1
    errors = [ln for ln in read_err(run_dir).splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and f"interrupted by SIGTERM at step {saved};" in errors[0], errors
    assert f"resume_dir={run_dir}" in errors[0] and not (run_dir / ".lock").exists()
    saved_config = (run_dir / ".hydra" / "config.yaml").read_text()

    # resume_dir reuses the saved config, progress callback included: only its pauses are turned off
    resume = [f"resume_dir={run_dir}", "+callbacks.progress.sleep=0", "+callbacks.progress.stall_from=null"]
    assert finish(resume, run_dir) == 0, read_err(run_dir)
    assert_resumed_like_reference(run_dir, reference)
    assert (run_dir / ".hydra" / "config.yaml").read_text() == saved_config  # what resume_dir reads


# ---- every phase honours the signal contract (issue 21) ---------------------------------------------
PHASE_STEPS = 4


def phase_args(suite: Suite, run_dir: Path, marker: Path, phase: str, *extra: str) -> list[str]:
    """SFT with 5 validation batches of 1 conversation, a validation every 2 steps, the export on, and
    a ``StallInPhase`` that holds the run in ``phase`` until the test has signalled it."""
    replaced = ("trainer.max_steps=", "trainer.limit_val_batches=", "export=", "data.val_fraction=")
    base = [a for a in suite.args("sft", run_dir) if not a.startswith(replaced)]
    return [
        *base,
        f"trainer.max_steps={PHASE_STEPS}",
        "trainer.limit_val_batches=5",
        "trainer.val_check_interval=2",
        "data.val_fraction=0.25",
        "data.eval_batch_size=1",
        "export=true",
        "+callbacks.stall._target_=tests.hardening_helpers.StallInPhase",
        f"+callbacks.stall.phase={phase}",
        f"+callbacks.stall.marker={marker}",
        *extra,
    ]


def signal_in_phase(args: list[str], run_dir: Path, marker: Path, signum: int) -> int:
    """Start train.py, wait until it stalls in its phase (``marker``), send ``signum``, let it go on."""
    proc = start_script("train.py", args, log_prefix(run_dir))
    wait_until(proc, marker.exists, f"the stall at {marker.name}", run_dir)
    os.kill(proc.pid, signum)
    Path(f"{marker}.go").touch()
    return proc.wait(TIMEOUT_S)


def one_error_line(run_dir: Path) -> str:
    err = read_err(run_dir)
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_sigterm_in_the_validation_after_fit_stops_at_the_next_batch_and_exits_143(
    tmp_path: Path, suite: Suite
):
    run_dir, marker = tmp_path / "run", tmp_path / "stall"
    args = phase_args(suite, run_dir, marker, "after_fit_val", "validate_after_fit=true")
    assert signal_in_phase(args, run_dir, marker, signal.SIGTERM) == 128 + signal.SIGTERM, read_err(run_dir)
    assert not Path(f"{marker}.after").exists()  # no validation batch started after the signalled one
    error = one_error_line(run_dir)
    assert "interrupted by SIGTERM during the validation after fit, after training had finished" in error
    assert f"holds step {PHASE_STEPS}" in error and f"resume_dir={run_dir}" in error
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["status"] == "interrupted"
    assert summary["global_step"] == final_state(run_dir)["global_step"] == PHASE_STEPS
    assert (run_dir / "hf_model" / "config.json").is_file() and not (run_dir / ".lock").exists()


def test_sigterm_in_the_validation_inside_fit_saves_that_step_and_resumes_exactly(
    tmp_path: Path, suite: Suite
):
    reference, run_dir, marker = tmp_path / "reference", tmp_path / "run", tmp_path / "stall"
    assert finish(phase_args(suite, reference, tmp_path / "unused", "none"), reference) == 0, read_err(
        reference
    )
    args = phase_args(suite, run_dir, marker, "fit_val", "+callbacks.stall.step=2")
    assert signal_in_phase(args, run_dir, marker, signal.SIGTERM) == 128 + signal.SIGTERM, read_err(run_dir)
    assert not Path(f"{marker}.after").exists()  # stopped at the next batch, not at the end of the pass
    assert "interrupted by SIGTERM in the validation at step 2; saved" in one_error_line(run_dir)
    assert final_state(run_dir)["global_step"] == 2
    assert json.loads((run_dir / "summary.json").read_text())["interrupted"] is True

    assert finish([f"resume_dir={run_dir}", "+callbacks.stall.phase=none"], run_dir) == 0, read_err(run_dir)
    assert_bitwise(final_state(run_dir), final_state(reference))


def test_sigterm_in_the_export_is_one_error_line_and_leaves_no_partial_hf_model(tmp_path: Path, suite: Suite):
    run_dir, marker = tmp_path / "run", tmp_path / "stall"
    args = phase_args(suite, run_dir, marker, "export")
    assert signal_in_phase(args, run_dir, marker, signal.SIGTERM) == 128 + signal.SIGTERM, read_err(run_dir)
    error = one_error_line(run_dir)
    assert "the hf_model/ export was interrupted by SIGTERM (nothing written there)" in error
    assert "consolidate_checkpoint.py" in error
    assert not (run_dir / "hf_model").exists() and not list(run_dir.glob(".hf_model.tmp-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["hf_model"] is None
    assert summary["global_step"] == final_state(run_dir)["global_step"] == PHASE_STEPS


def test_kill_9_in_the_export_leaves_no_hf_model_and_the_resume_writes_it(tmp_path: Path, suite: Suite):
    run_dir, marker = tmp_path / "run", tmp_path / "stall"
    args = phase_args(suite, run_dir, marker, "export")
    assert signal_in_phase(args, run_dir, marker, signal.SIGKILL) == -signal.SIGKILL
    partial = list(run_dir.glob(".hf_model.tmp-*"))
    assert len(partial) == 1 and (partial[0] / "config.json").is_file()  # the weights, no tokenizer yet
    assert not (run_dir / "hf_model").exists()  # nothing that looks like a model

    assert finish([f"resume_dir={run_dir}", "+callbacks.stall.phase=none"], run_dir) == 0, read_err(run_dir)
    assert (run_dir / "hf_model" / "tokenizer_config.json").is_file()
    assert not list(run_dir.glob(".hf_model.tmp-*"))  # the killed run's leftover was removed
