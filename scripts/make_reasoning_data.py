"""Generate the bundled reasoning data (deterministic, seeded).

Writes, under ``--out`` (default ``data/reasoning``):

- ``train.jsonl`` (2000) and ``test.jsonl`` (200): arithmetic word problems (task ``arith``) with short
  step-by-step rationales ending in GSM8K's ``#### N``;
- ``mixed_train.jsonl`` / ``mixed_test.jsonl``: a mixed-task pool for the "question type unknown"
  scenario: ``arith`` problems, multiple-choice arithmetic (``arith_mc``, answer a letter) and yes/no
  number facts (``yesno``), each record with a ``task`` field.

Numbers stay small so a tiny model can partly learn the problems. No question appears in both a train
and a test file. Run: ``python scripts/make_reasoning_data.py``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

NAMES = ["Tom", "Mia", "Sam", "Ana", "Leo", "Zoe", "Ben", "Ivy", "Max", "Eva", "Raj", "Kim", "Liam", "Nora"]
ITEMS = ["apples", "pencils", "stickers", "books", "marbles", "cookies", "cards", "shells", "stamps", "toys"]
PRICED = ["pen", "notebook", "ticket", "sandwich", "ball", "cupcake", "kite", "bracelet"]
CONTAINERS = ["boxes", "bags", "packs", "baskets", "jars"]

Problem = tuple[str, str, int]  # question, rationale (without the #### line), answer


def _name_pair(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(NAMES, 2)
    return a, b


def p_add(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 30), rng.randint(2, 30)
    q = f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?"
    r = f"{name} starts with {a} {item} and gets {b} more, so {a} + {b} = {a + b}."
    return q, r, a + b


def p_sub(rng: random.Random) -> Problem:
    name, friend = _name_pair(rng)
    item = rng.choice(ITEMS)
    a = rng.randint(10, 40)
    b = rng.randint(1, a - 1)
    q = f"{name} has {a} {item} and gives {b} of them to {friend}. How many {item} does {name} have left?"
    r = f"{name} had {a} {item} and gave away {b}, so {a} - {b} = {a - b}."
    return q, r, a - b


def p_mul(rng: random.Random) -> Problem:
    name, item, box = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    q = f"{name} has {a} {box} with {b} {item} in each. How many {item} does {name} have in total?"
    r = f"There are {a} {box} with {b} {item} each, so {a} * {b} = {a * b}."
    return q, r, a * b


def p_price(rng: random.Random) -> Problem:
    name, thing = rng.choice(NAMES), rng.choice(PRICED)
    price, qty = rng.randint(2, 15), rng.randint(2, 9)
    q = f"A {thing} costs ${price}. {name} buys {qty} of them. How many dollars does {name} spend?"
    r = f"Each {thing} costs ${price} and {name} buys {qty}, so {qty} * {price} = {qty * price}."
    return q, r, qty * price


def p_change(rng: random.Random) -> Problem:
    name, thing = rng.choice(NAMES), rng.choice(PRICED)
    price, qty = rng.randint(2, 9), rng.randint(2, 5)
    cost = price * qty
    paid = rng.choice([c for c in (20, 50, 100) if c >= cost])
    q = (
        f"{name} buys {qty} {thing}s at ${price} each and pays with a ${paid} bill. "
        f"How many dollars of change does {name} get?"
    )
    r = f"The {thing}s cost {qty} * {price} = {cost} dollars. The change is {paid} - {cost} = {paid - cost}."
    return q, r, paid - cost


def p_age(rng: random.Random) -> Problem:
    name, friend = _name_pair(rng)
    a, b, c = rng.randint(5, 30), rng.randint(1, 10), rng.randint(1, 10)
    q = f"{name} is {a} years old. {friend} is {b} years older than {name}. How old will {friend} be in {c} years?"
    r = f"{friend} is {a} + {b} = {a + b} years old now. In {c} years {friend} will be {a + b} + {c} = {a + b + c}."
    return q, r, a + b + c


def p_packs(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(1, 20), rng.randint(2, 5), rng.randint(2, 10)
    q = f"{name} has {a} {item} and buys {b} packs with {c} {item} in each. How many {item} does {name} have now?"
    r = f"The packs hold {b} * {c} = {b * c} {item}. Then {a} + {b * c} = {a + b * c}."
    return q, r, a + b * c


def p_share(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    each, friends = rng.randint(2, 10), rng.randint(2, 6)
    total = each * friends
    q = f"{name} shares {total} {item} equally among {friends} friends. How many {item} does each friend get?"
    r = f"Each friend gets {total} / {friends} = {each}."
    return q, r, each


TEMPLATES: list[Callable[[random.Random], Problem]] = [
    p_add,
    p_sub,
    p_mul,
    p_price,
    p_change,
    p_age,
    p_packs,
    p_share,
]


def arith_record(rng: random.Random) -> dict:
    q, r, a = rng.choice(TEMPLATES)(rng)
    return {"task": "arith", "question": q, "answer": f"{r}\n#### {a}"}


def mc_record(rng: random.Random) -> dict:
    """Multiple-choice: an arithmetic problem with four numeric options; the answer is a letter."""
    q, r, a = rng.choice(TEMPLATES)(rng)
    wrong: set[int] = set()
    while len(wrong) < 3:
        w = a + rng.choice([-1, 1]) * rng.randint(1, max(3, a // 3 + 1))
        if w >= 0 and w != a:
            wrong.add(w)
    options = [a, *sorted(wrong)]
    rng.shuffle(options)
    letter = "ABCD"[options.index(a)]
    return {
        "task": "arith_mc",
        "question": q,
        "choices": [str(o) for o in options],
        "answer": f"{r} {a} is option ({letter}).\n#### {letter}",
    }


def yesno_record(rng: random.Random) -> dict:
    """Yes/no facts about small numbers (comparison, parity, sums)."""
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.sample(range(1, 100), 2)
        q = f"Is {a} greater than {b}?"
        yes = a > b
        r = f"{a} is {'greater' if yes else 'less'} than {b}."
    elif kind == 1:
        a = rng.randint(1, 99)
        q = f"Is {a} an even number?"
        yes = a % 2 == 0
        r = f"{a} divided by 2 leaves remainder {a % 2}, so it is {'even' if yes else 'odd'}."
    else:
        a, b = rng.randint(1, 30), rng.randint(1, 30)
        claim = a + b + rng.choice([0, 0, -2, -1, 1, 2])
        q = f"Is {a} + {b} equal to {claim}?"
        yes = a + b == claim
        r = f"{a} + {b} = {a + b}, which {'is' if yes else 'is not'} {claim}."
    return {"task": "yesno", "question": q, "answer": f"{r}\n#### {'yes' if yes else 'no'}"}


def unique_records(
    make: Callable[[random.Random], dict], rng: random.Random, n: int, seen: set[str]
) -> list[dict]:
    """``n`` records whose questions are not in ``seen`` (which is updated)."""
    out = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n:
            raise RuntimeError(f"could not generate {n} distinct questions")
        rec = make(rng)
        if rec["question"] in seen:
            continue
        seen.add(rec["question"])
        out.append(rec)
    return out


def write_jsonl(path: Path, records: list[dict], prefix: str) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i, rec in enumerate(records):
            f.write(json.dumps({"id": f"{prefix}-{i:04d}", **rec}, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="data/reasoning")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--mixed-train-per-task", type=int, default=100)
    ap.add_argument("--mixed-test-per-task", type=int, default=60)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    seen: set[str] = set()
    # Test sets first, so they never depend on how much training data is requested.
    test = unique_records(arith_record, rng, args.test, seen)
    mixed_test = (
        unique_records(arith_record, rng, args.mixed_test_per_task, seen)
        + unique_records(mc_record, rng, args.mixed_test_per_task, seen)
        + unique_records(yesno_record, rng, args.mixed_test_per_task, seen)
    )
    train = unique_records(arith_record, rng, args.train, seen)
    mixed_train = (
        unique_records(arith_record, rng, args.mixed_train_per_task, seen)
        + unique_records(mc_record, rng, args.mixed_train_per_task, seen)
        + unique_records(yesno_record, rng, args.mixed_train_per_task, seen)
    )
    random.Random(args.seed + 1).shuffle(mixed_test)
    random.Random(args.seed + 2).shuffle(mixed_train)
    write_jsonl(out / "train.jsonl", train, "arith-train")
    write_jsonl(out / "test.jsonl", test, "arith-test")
    write_jsonl(out / "mixed_train.jsonl", mixed_train, "mixed-train")
    write_jsonl(out / "mixed_test.jsonl", mixed_test, "mixed-test")
    for name in ("train", "test", "mixed_train", "mixed_test"):
        p = out / f"{name}.jsonl"
        print(f"{p}: {sum(1 for _ in p.open())} records, {p.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
