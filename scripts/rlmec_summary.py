"""The RLMEC pipeline's table: greedy accuracy per method (mean over seeds, then each seed) from every
``eval_<method>_s<seed>/results.json`` under the pipeline folder, and the RL data's reward statistics.

    python scripts/rlmec_summary.py <pipeline folder> [--markdown]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

# The paper's comparison order; any other method folder follows in name order.
ORDER = [
    "sft",
    "rft",
    "dpo",
    "rlmec",
    "rlmec_nolir",
    "rlmec_seqreward",
    "grpo",
    "rloo",
    "ppo",
    "rlmec_online",
]


def accuracies(out: Path) -> dict[str, dict[str, float]]:
    """{method: {seed label: greedy accuracy}} in table order; the SFT start has the single label ``-``."""
    rows: dict[str, dict[str, float]] = defaultdict(dict)
    for d in sorted(out.glob("eval_*")):
        results = d / "results.json"
        if not results.exists():
            continue
        acc = json.loads(results.read_text())["metrics"]["greedy"]["accuracy"]
        name = d.name.removeprefix("eval_")
        method, _, seed = name.rpartition("_s")
        if not method or not seed.isdigit():
            method, seed = name, "-"
        rows[method][seed] = acc
    rank = {m: i for i, m in enumerate(ORDER)}
    return dict(sorted(rows.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    rows = accuracies(args.out)
    seeds = sorted({s for r in rows.values() for s in r if s != "-"})
    if args.markdown:
        print("| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
        print("|---|" + "---|" * (len(seeds) + 1))
    else:
        print("method            mean    " + "  ".join(f"seed {s}" for s in seeds))
    for method, per_seed in rows.items():
        mean = sum(per_seed.values()) / len(per_seed)
        cells = [f"{per_seed[s]:.3f}" if s in per_seed else "" for s in seeds]
        if "-" in per_seed:
            cells = [f"{per_seed['-']:.3f}"] * len(seeds) if seeds else [f"{per_seed['-']:.3f}"]
        if args.markdown:
            print(f"| {method} | " + " | ".join(cells) + f" | {mean:.3f} |")
        else:
            print(f"{method:<17} {mean:.3f}   " + "  ".join(f"{c:>6}" for c in cells))
    summary = args.out / "rl_data" / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        print(
            f"RL data: {s['records']} samples, non-zero-reward fraction {s['nonzero_reward_frac']:.3f}, "
            f"mean reward correct {s['mean_reward_correct']}, wrong {s['mean_reward_wrong']}"
        )


if __name__ == "__main__":
    main()
