"""A fork server for the tests: ``python tests/fork_server.py`` imports torch, Lightning and the project
once, then runs ``python <script> <args>`` for each request in a forked child, so each run is a real
process (its own pid, signals and exit status) without paying the ~10 s of imports again.

Protocol (one JSON object per line): the client writes ``{"script", "args", "log_prefix"}``; the server
answers ``{"pid": <child pid>}`` at once and ``{"status": <exit status, -signal if killed>}`` when the
child ends. One request at a time. The child writes its output to ``<log_prefix>.out`` and ``.err``.
The client is ``tests.helpers.start_script``.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = (
    "torch",
    "lightning",
    "transformers",
    "datasets",
    "hydra",
    "train",
    "tests.hardening_helpers",
    "lightning_modules.sft",
    "lightning_modules.capo",
    "lightning_modules.topp_moe",
    "lightning_modules.rlmec",
    "datamodules.chat",
    "datamodules.preference",
    "datamodules.lm_corpus",
    "datamodules.rlmec_token_data",
)


def run_child(script: str, args: list[str], log_prefix: str) -> int:
    """In the forked child: ``python <script> args`` with stdin closed and output to the log files."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, suffix in ((1, ".out"), (2, ".err")):
        os.dup2(os.open(log_prefix + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    warnings.simplefilter("ignore")
    for name in PRELOAD:
        importlib.import_module(name)
    import torch

    torch.set_num_threads(1)  # as the pytest process and run_script: runs compare bitwise
    replies = os.fdopen(os.dup(1), "w")  # the pipe to the client (children redirect fd 1)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            replies.close()
            os._exit(run_child(str(ROOT / request["script"]), request["args"], request["log_prefix"]))
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
