"""Two-turn dialogues with long answers, for ``bench/packing.py``, built from the hand-written real
dialogues of ``data/realmodel`` (there is no MT-Bench + GPT-4 answer file here).

Each dialogue is two (question, answer) turns. Questions are the real user turns; each answer joins
real assistant answers (whole paragraphs, in a seeded random order) up to a target length drawn from a
log-normal distribution, so the lengths spread like long chat answers: many of a few hundred tokens, a
tail past the cut. The median and spread are chosen so that random batches of 8 cut at 1024 tokens of
SmolLM2's template are about 37% padding (38% is what issue #19 measured on MT-Bench questions with
GPT-4's answers). ``padding_fraction`` reports what a file gives.

    .venv/bin/python bench/packing_data.py out.jsonl [--n 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "data" / "realmodel" / "dialogues.jsonl"
#: Log-normal answer length in characters: median e^MU, spread SIGMA (about 4 characters a token).
MU, SIGMA = 6.5, 0.9


def real_turns(path: Path = SOURCE) -> tuple[list[str], list[str]]:
    """The user turns and the assistant answers' paragraphs of the source dialogues."""
    questions, paragraphs = [], []
    for line in path.read_text().splitlines():
        for m in json.loads(line)["messages"]:
            if m["role"] == "user":
                questions.append(m["content"])
            elif m["role"] == "assistant":
                paragraphs += [p for p in m["content"].split("\n\n") if p.strip()]
    return questions, paragraphs


def long_answer(paragraphs: list[str], rng: random.Random) -> str:
    target = rng.lognormvariate(MU, SIGMA)
    out: list[str] = []
    while sum(len(p) for p in out) < target:
        out.append(rng.choice(paragraphs))
    return "\n\n".join(out)


def make_dialogues(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    questions, paragraphs = real_turns()
    rows = []
    for i in range(n):
        messages = []
        for _ in range(2):
            messages.append({"role": "user", "content": rng.choice(questions)})
            messages.append({"role": "assistant", "content": long_answer(paragraphs, rng)})
        rows.append({"id": f"two-turn-{i:03d}", "messages": messages})
    return rows


def padding_fraction(lengths: list[int], batch_size: int, seed: int = 0) -> float:
    """The share of padding in random batches of ``batch_size`` rows, each padded to its longest."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    pad = total = 0
    for s in range(0, len(order), batch_size):
        rows = [lengths[i] for i in order[s : s + batch_size]]
        pad += len(rows) * max(rows) - sum(rows)
        total += len(rows) * max(rows)
    return pad / total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = make_dialogues(args.n, args.seed)
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} two-turn dialogues to {args.out}")


if __name__ == "__main__":
    main()
