"""RLMEC imitation weights: rapidfuzz's Levenshtein alignment against a plain-Python dynamic program.

    .venv/bin/python bench/edit_alignment.py [--pairs N] [--length L] [--edit-rate R] [--rounds K]

Both sides turn the same (original, rewrite) token-id pairs into imitation weights (1.0 for rewrite
tokens not matched to an identical original token, 0.5 otherwise; METHODS.md §3):

- ours: ``algorithms.alignment.imitation_weights`` (rapidfuzz ``Levenshtein.editops``, in C);
- baseline: the textbook O(|y|·|ŷ|) Wagner–Fischer table in pure Python, with a backtrace.

The pairs are seeded random token ids (vocabulary 32k) of about ``--length`` tokens, with
``--edit-rate`` of the positions substituted, inserted or deleted. The two sides run interleaved in
rounds (ours, baseline, ours, ...); the ratio is the median of per-round ratios (baseline time ÷ our
time). Both must agree on the edit distance of every pair (the count of edited tokens may legitimately
differ where several alignments are optimal; the agreement is reported).

The last line printed is one JSON object with ``ratio``, ``baseline`` and the sizes measured.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from algorithms.alignment import EDITED_WEIGHT, KEPT_WEIGHT, imitation_weights  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--length", type=int, default=200, help="original length in tokens")
    p.add_argument("--edit-rate", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def make_pairs(n: int, length: int, rate: float, vocab: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Seeded (original, rewrite) pairs: the rewrite has round(rate·length) random edits."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        y = [rng.randrange(vocab) for _ in range(length)]
        y_hat = list(y)
        for _ in range(round(rate * length)):
            kind = rng.choice(("sub", "ins", "del"))
            pos = rng.randrange(len(y_hat) + (kind == "ins"))
            if kind == "sub" and y_hat:
                y_hat[pos] = (y_hat[pos] + 1 + rng.randrange(vocab - 1)) % vocab
            elif kind == "ins":
                y_hat.insert(pos, rng.randrange(vocab))
            elif y_hat:
                del y_hat[pos]
        pairs.append((y, y_hat))
    return pairs


def dp_weights(y: list[int], y_hat: list[int]) -> tuple[list[float], int]:
    """Plain-Python Levenshtein table + backtrace: (weights of y_hat, edit distance)."""
    n, m = len(y), len(y_hat)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        row, prev, yi = d[i], d[i - 1], y[i - 1]
        for j in range(1, m + 1):
            cost = 0 if yi == y_hat[j - 1] else 1
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
    weights = [KEPT_WEIGHT] * m
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and y[i - 1] == y_hat[j - 1] and d[i][j] == d[i - 1][j - 1]:
            i, j = i - 1, j - 1
        elif i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + 1:
            weights[j - 1] = EDITED_WEIGHT
            i, j = i - 1, j - 1
        elif j > 0 and d[i][j] == d[i][j - 1] + 1:
            weights[j - 1] = EDITED_WEIGHT
            j -= 1
        else:
            i -= 1
    return weights, d[n][m]


def main() -> None:
    args = parse_args()
    from rapidfuzz.distance import Levenshtein

    pairs = make_pairs(args.pairs, args.length, args.edit_rate, args.vocab, args.seed)
    ours_t, base_t, ratios = [], [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        ours = [imitation_weights(y, y_hat) for y, y_hat in pairs]
        t1 = time.perf_counter()
        base = [dp_weights(y, y_hat) for y, y_hat in pairs]
        t2 = time.perf_counter()
        ours_t.append(t1 - t0)
        base_t.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
        print(
            f"round {r + 1}/{args.rounds}: rapidfuzz {1e6 * (t1 - t0) / args.pairs:8.1f} us/pair, "
            f"python DP {1e3 * (t2 - t1) / args.pairs:8.2f} ms/pair, ratio {ratios[-1]:8.1f}",
            flush=True,
        )
    distance_equal = sum(Levenshtein.distance(y, yh) == dist for (y, yh), (_, dist) in zip(pairs, base))
    weights_equal = sum(a == b for a, (b, _) in zip(ours, base))
    edited = statistics.mean(sum(w == EDITED_WEIGHT for w in ws) for ws in ours)
    print(
        f"\n{args.pairs} pairs of {args.length} tokens, {args.edit_rate:.0%} edits: edit distance equal on "
        f"{distance_equal}/{args.pairs}, weights identical on {weights_equal}/{args.pairs}, "
        f"{edited:.1f} edited tokens per rewrite on average"
    )
    print(
        json.dumps(
            {
                "bench": "edit_alignment",
                "ratio": round(statistics.median(ratios), 1),
                "ratios": [round(x, 1) for x in ratios],
                "baseline": "plain-Python Wagner-Fischer DP with backtrace",
                "ours_us_per_pair": round(1e6 * statistics.median(ours_t) / args.pairs, 2),
                "baseline_ms_per_pair": round(1e3 * statistics.median(base_t) / args.pairs, 3),
                "pairs": args.pairs,
                "length": args.length,
                "edit_rate": args.edit_rate,
                "rounds": args.rounds,
                "distance_equal": distance_equal,
                "weights_identical": weights_equal,
            }
        )
    )


if __name__ == "__main__":
    main()
