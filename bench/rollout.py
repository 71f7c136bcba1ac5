"""Benchmark: the batched Parrot rollout against a session-by-session loop over the same backend.

Both variants run :func:`stages.parrot_rollout.rollout.roll_out` with the same HF backend (a tiny
random Llama, hidden 64, 2 layers, the shipped 1k-token tokenizer), the same prompts and sampling
settings (exactly ``--new-tokens`` tokens per reply and query: EOS ignored, filters relaxed so no session
ends early); ``batched`` advances all sessions together (one call per turn and model), ``loop`` rolls out
one session at a time. Each variant gets a fresh in-memory cache, so nothing is reused. Variants alternate
in rounds (order swapped each round); the median of the per-round ratios is reported.
The LAST line is JSON; ``"ratio"`` = batched sessions/s ÷ loop sessions/s.

Run: ``python bench/rollout.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from inference.backends.hf import HFBackend
from inference.generation_cache import CachedGenerator
from inference.sampling import SamplingParams
from models import load_tokenizer
from stages.parrot_rollout.filters import RolloutFilters
from stages.parrot_rollout.rollout import Session, roll_out

ROOT = Path(__file__).resolve().parents[1]
FILTERS = RolloutFilters(min_query_words=1, near_duplicate_ratio=100, loop_ratio=100, reject_cut_off=False)


def tiny_backend(batch_size: int) -> HFBackend:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer(str(ROOT / "assets" / "tokenizer"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return HFBackend(LlamaForCausalLM(config).eval(), tok, batch_size=batch_size, model_id="bench-tiny")


def seeds(n: int) -> list[Session]:
    return [
        Session(f"s{i}", [{"role": "user", "content": f"Tell me about river number {i}."}]) for i in range(n)
    ]


def run(backend: HFBackend, params: SamplingParams, sessions: int, turns: int, batched: bool) -> float:
    """Seconds to roll out ``sessions`` sessions of ``turns`` turns."""

    def gen(kind: str) -> CachedGenerator:
        return CachedGenerator(backend, params, None, kind=kind, chunk_size=sessions)

    answer, ask = gen("answer"), gen("ask")
    start = time.perf_counter()
    if batched:
        done = roll_out(seeds(sessions), answer, ask, turns, FILTERS).sessions
    else:
        done = [x for s in seeds(sessions) for x in roll_out([s], answer, ask, turns, FILTERS).sessions]
    elapsed = time.perf_counter() - start
    assert all(s.user_turns() == turns for s in done), "a session ended early: the variants did unequal work"
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description="Batched Parrot rollout vs a session-by-session loop")
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backend = tiny_backend(batch_size=args.sessions)
    params = SamplingParams(
        temperature=0.7, top_p=0.95, max_new_tokens=args.new_tokens, ignore_eos=True, seed=0
    )
    ratios, times = [], {"batched": [], "loop": []}
    for r in range(args.rounds):
        order = ("batched", "loop") if r % 2 == 0 else ("loop", "batched")
        t = {name: run(backend, params, args.sessions, args.turns, name == "batched") for name in order}
        for name in t:
            times[name].append(t[name])
        ratios.append(t["loop"] / t["batched"])
        print(f"round {r + 1}: batched {t['batched']:.2f}s  loop {t['loop']:.2f}s  ratio {ratios[-1]:.2f}")
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'variant':<10}{'median s':>10}{'sessions/s':>12}")
    for k, v in med.items():
        print(f"{k:<10}{v:>10.2f}{args.sessions / v:>12.2f}")
    print(
        json.dumps(
            {
                "ratio": round(statistics.median(ratios), 3),
                "baseline": "the same roll_out, one session at a time (session-by-session loop)",
                "sessions": args.sessions,
                "turns": args.turns,
                "new_tokens": args.new_tokens,
                "rounds": args.rounds,
                "threads": args.threads,
                "median_seconds": {k: round(v, 3) for k, v in med.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
