"""Run Quartet's vLLM backend on a batch of generation jobs and write what it returned as JSON.

It runs in the vLLM environment (``.venv-vllm``, whose transformers differs from the main one), so the
tier's tests call it as a subprocess and compare its output with the HF backend's in the main venv:

    .venv-vllm/bin/python tests_vllm/vllm_driver.py <request.json> <result.json>

``request.json``: ``{"model": <folder>, "engine": {vLLM engine kwargs}, "prompts": [...], "jobs":
[{"name": ..., "params": {SamplingParams fields}}, ...]}``. A prompt is a string (raw), a list of chat
messages, or ``{"next_turn": role, "messages": [...]}`` (a :class:`~inference.chat.NextTurn`).

``result.json``: ``{"prompt_ids": [[ids of each prompt]], "describe": ..., "load_s": ..., "jobs":
{name: [[completion dicts of prompt 0], ...]}}``. One engine serves every job.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def decode_prompt(raw: Any) -> Any:
    """A request's prompt as the backend takes it (dicts with ``next_turn`` become a NextTurn)."""
    from inference.chat import NextTurn

    if isinstance(raw, dict):
        return NextTurn(raw["messages"], role=raw["next_turn"])
    return raw


def run(request: dict[str, Any]) -> dict[str, Any]:
    from inference.backends.vllm import VLLMBackend
    from inference.sampling import SamplingParams

    start = time.perf_counter()
    backend = VLLMBackend(request["model"], **request.get("engine", {}))
    load_s = time.perf_counter() - start
    prompts = [decode_prompt(p) for p in request["prompts"]]
    jobs: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for job in request["jobs"]:
        t0 = time.perf_counter()
        groups = backend.generate(prompts, SamplingParams(**job["params"]))
        timings[job["name"]] = round(time.perf_counter() - t0, 2)
        jobs[job["name"]] = [[c.to_dict() for c in group] for group in groups]
    result = {
        "prompt_ids": [backend.encode(p) for p in prompts],
        "describe": backend.describe(),
        "load_s": round(load_s, 2),
        "generate_s": timings,
        "jobs": jobs,
    }
    backend.close()
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: vllm_driver.py <request.json> <result.json>", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = run(request)
    Path(argv[1]).write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":  # vLLM starts its engine in a spawned process: the guard is required
    sys.exit(main(sys.argv[1:]))
