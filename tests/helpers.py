"""Shared test helpers: compose the real Hydra configs, run train.py in- or out-of-process."""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from utils.hydra_resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("QUARTET_ROOT", str(ROOT))
register_resolvers()

# Small and fast: two steps of the tiny model, no progress bars.
FAST = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "print_config=false"]


def tiny_model_cfg(**overrides: Any) -> dict[str, Any]:
    """A ``model`` config of the tiny Llama built from the shipped tokenizer (``model.kind=tiny``):
    2 layers, hidden 32, 4 heads (2 KV), float32; ``overrides`` change or add keys."""
    return {
        "kind": "tiny",
        "arch": "llama",
        "tokenizer": str(ROOT / "assets" / "tokenizer"),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "max_position_embeddings": 128,
        "tie_word_embeddings": True,
        "dtype": "float32",
        **overrides,
    }


def compose_cfg(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides, writing into ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.work_dir = str(ROOT)
    return cfg


#: A 4-step two-process job (DDP/FSDP/torchrun tests): checkpoints at steps 2 and 4, no validation.
TWO_PROCESS_JOB = [
    "debug=default",
    "trainer.max_steps=4",
    "data.batch_size=8",
    "logger=csv",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.limit_val_batches=0",
    "callbacks.model_checkpoint.every_n_train_steps=2",
]


def crash_at(step: int) -> list[str]:
    """train.py overrides that add :class:`CrashAtStep` (a simulated crash after ``step``)."""
    return ["+callbacks.crash._target_=tests.helpers.CrashAtStep", f"+callbacks.crash.step={step}"]


class CrashAtStep(L.Callback):
    """Simulates a crash: raises once ``global_step`` reaches ``step`` (after that step's checkpoint)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


def run_script(
    script: str, args: list[str], timeout: int = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python <script> args`` from the repo root; returns the completed process (text output)."""
    # One intra-op thread, as in the pytest process (conftest): runs compared bitwise with in-process ones
    # must reduce in the same order.
    full_env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "QUARTET_ROOT": str(ROOT),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


class _Replies:
    """Lines from the fork server's stdout, read with a timeout (unbuffered, so ``select`` is exact)."""

    def __init__(self, server: subprocess.Popen):
        self.server, self.fd, self.buffer = server, server.stdout.fileno(), b""

    def line(self, timeout: float | None) -> dict | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise RuntimeError(f"the fork server stopped (exit {self.server.poll()})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


class ScriptRun:
    """A ``python <script> args`` process started by :func:`start_script`."""

    def __init__(self, replies: _Replies, pid: int):
        self._replies, self.pid = replies, pid
        self.exitcode: int | None = None

    def poll(self, timeout: float = 0.0) -> int | None:
        """The exit status once the process has ended (``-signal`` when a signal killed it), else None."""
        if self.exitcode is None:
            reply = self._replies.line(timeout)
            self.exitcode = None if reply is None else reply["status"]
        return self.exitcode

    def wait(self, timeout: float) -> int:
        """Wait for the end; past ``timeout`` seconds, kill the process and fail."""
        if self.poll(timeout) is None:
            os.kill(self.pid, signal.SIGKILL)
            self.poll(60)
            raise AssertionError(f"pid {self.pid} ran past {timeout} s and was killed")
        return self.exitcode


_fork_server: _Replies | None = None
_last_run: ScriptRun | None = None


def start_script(script: str, args: list[str], log_prefix: Path) -> ScriptRun:
    """Start ``python <script> args`` as its own process; its output goes to ``<log_prefix>.out``/``.err``.

    The process is forked from ``tests/fork_server.py``, which has already imported torch, Lightning
    and the project, and runs the script as ``__main__``: the same program as a fresh ``python <script>``
    (a real process with its own signals and exit status) without ~10 s of imports each time, which is
    what lets the reliability suite start and kill dozens of runs. One run at a time per test process."""
    global _fork_server, _last_run
    if _last_run is not None and _last_run.poll() is None:
        os.kill(_last_run.pid, signal.SIGKILL)  # a run a failed test left behind
        _last_run.poll(60)
    if _fork_server is None or _fork_server.server.poll() is not None:
        env = {**os.environ, "QUARTET_ROOT": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        env.pop("SLURM_JOB_ID", None)
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "fork_server.py")],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        atexit.register(server.stdin.close)  # the server ends at the end of its input
        _fork_server = _Replies(server)
    request = {"script": script, "args": list(args), "log_prefix": str(log_prefix)}
    _fork_server.server.stdin.write((json.dumps(request) + "\n").encode())
    _last_run = ScriptRun(_fork_server, _fork_server.line(None)["pid"])
    return _last_run


def load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """Model weights from a single-file Lightning checkpoint (weights_only load)."""
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"parameter {k} differs"
