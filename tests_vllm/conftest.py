"""The vLLM tier (`make test-vllm`): Quartet's vLLM backend and a real `vllm serve` against the HF backend,
on the real SmolLM2-135M-Instruct folder (see tests/realmodel).

vLLM lives in its own environment (``.venv-vllm``, `make venv-vllm`): its transformers pin differs from
ours. These tests run in the main venv and reach vLLM through subprocesses only: the offline engine via
``tests_vllm/vllm_driver.py``, the server via ``.venv-vllm/bin/vllm serve``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("QUARTET_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from tests.real_model_folder import prepare_real_model  # noqa: E402

torch.set_num_threads(1)

VENV_VLLM = Path(os.environ.get("VENV_VLLM", ROOT / ".venv-vllm"))
SERVED_NAME = "smollm2-135m-instruct"
#: Small and exact on CPU: fp32 as the HF side (vLLM's "auto" would pick a 16-bit type for an fp32
#: checkpoint), no graph capture, a short context.
ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048, "seed": 0}
#: vLLM's CPU KV cache, in GiB (its default is sized for servers).
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}


def vllm_env() -> dict[str, str]:
    """The environment of a vLLM subprocess: ours plus the small-CPU settings, without the main venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(VLLM_ENV)
    env["PYTHONPATH"] = str(ROOT)
    return env


def vllm_bin(name: str) -> Path:
    """An executable of the vLLM venv; fails with the command that builds it when missing."""
    path = VENV_VLLM / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} not found: build the vLLM environment with `make venv-vllm`", pytrace=False)
    return path


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """The fp32 SmolLM2-135M-Instruct folder both backends load (converted on first use)."""
    return prepare_real_model()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    """Poll ``url`` until it answers 200; fail with the server log's tail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"vllm serve exited with {proc.returncode} before answering:\n{tail}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    tail = log.read_text(errors="replace")[-3000:]
    pytest.fail(f"vllm serve did not answer {url} within {timeout:.0f} s:\n{tail}", pytrace=False)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group ``proc`` leads (vLLM shuts its engine down), SIGKILL after 60 s."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def vllm_server(real_model_dir, tmp_path_factory) -> Iterator[str]:
    """``vllm serve`` of the real model on 127.0.0.1 (a free port); yields its ``/v1`` base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm_serve") / "serve.log"
    cmd = [
        str(vllm_bin("python")),
        str(ROOT / "scripts" / "vllm_cli.py"),  # `vllm serve`; the wheel's own `vllm` script can't start
        "serve",
        str(real_model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        SERVED_NAME,
        "--dtype",
        ENGINE["dtype"],
        "--enforce-eager",
        "--max-model-len",
        str(ENGINE["max_model_len"]),
        "--seed",
        str(ENGINE["seed"]),
    ]
    with open(log, "wb") as out:
        # Its own process group, so the engine process it spawns is stopped with it.
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=vllm_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_server(f"{base_url}/models", proc, log)
        yield base_url
    finally:
        stop_group(proc)
