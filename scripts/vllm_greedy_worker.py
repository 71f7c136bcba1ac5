"""Greedy decoding with vLLM's offline engine, timed on request: the vLLM side of ``bench/generation.py
--workload greedy``. It runs in ``.venv-vllm`` (its own transformers), so the bench drives it over pipes:

    .venv-vllm/bin/python scripts/vllm_greedy_worker.py <request.json>

``request.json``: ``{"model": <folder>, "prompt_ids": [[...], ...], "new_tokens": N, "engine": {...}}``.
The worker loads the engine, prints ``ready``, then for every line ``run`` on stdin generates exactly
``new_tokens`` greedy tokens per prompt (EOS ignored) and prints one JSON line ``{"seconds": s,
"token_ids": [[...], ...]}`` (wall time of the ``generate`` call alone); it exits on ``quit`` or EOF.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    import vllm

    request = json.loads(Path(sys.argv[1]).read_text())
    llm = vllm.LLM(model=request["model"], **request.get("engine", {}))
    params = vllm.SamplingParams(
        temperature=0.0, max_tokens=request["new_tokens"], ignore_eos=True, detokenize=False
    )
    prompts = [vllm.TokensPrompt(prompt_token_ids=ids) for ids in request["prompt_ids"]]
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        ids = [list(o.outputs[0].token_ids) for o in outs]
        print(json.dumps({"seconds": seconds, "token_ids": ids}), flush=True)


if __name__ == "__main__":
    main()
