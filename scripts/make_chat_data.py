"""Generate Quartet's bundled multi-turn chat set (``data/chat/dialogues.jsonl``).

Every dialogue is built from a small fact table, so answers are deterministic and a tiny model can
visibly learn them. Follow-up user turns refer back to earlier turns with pronouns and ellipsis
("it", "that", "the second one", "and the first?"), which is what the Parrot Ask model and CaPO
need: context-dependent queries whose answer is wrong without the history.

Usage: ``python scripts/make_chat_data.py [--n 600] [--seed 0] [--out data/chat/dialogues.jsonl]``
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

FRUITS = {
    "apple": ("red", "crisp and sweet", "orchards in cool climates"),
    "banana": ("yellow", "soft and sweet", "warm tropical regions"),
    "cherry": ("dark red", "sweet with a small stone", "temperate orchards"),
    "lemon": ("yellow", "very sour", "sunny Mediterranean groves"),
    "grape": ("green or purple", "juicy", "vineyards on sunny hills"),
    "mango": ("orange", "rich and sweet", "hot tropical regions"),
    "pear": ("green", "mild and juicy", "cool orchards"),
    "plum": ("purple", "sweet and tart", "temperate gardens"),
}
ANIMALS = {
    "cat": ("meows", "fish and meat", "houses"),
    "dog": ("barks", "meat and kibble", "houses"),
    "cow": ("moos", "grass", "farms"),
    "owl": ("hoots", "mice", "forests"),
    "horse": ("neighs", "hay and oats", "stables"),
    "duck": ("quacks", "seeds and insects", "ponds"),
    "lion": ("roars", "zebras and antelopes", "savannas"),
    "frog": ("croaks", "insects", "ponds"),
}
COUNTRIES = {
    "France": ("Paris", "French", "Europe"),
    "Japan": ("Tokyo", "Japanese", "Asia"),
    "Kenya": ("Nairobi", "Swahili", "Africa"),
    "Brazil": ("Brasilia", "Portuguese", "South America"),
    "Canada": ("Ottawa", "English and French", "North America"),
    "Egypt": ("Cairo", "Arabic", "Africa"),
    "Italy": ("Rome", "Italian", "Europe"),
    "India": ("New Delhi", "Hindi", "Asia"),
}
TOOLS = {
    "hammer": "driving nails into wood",
    "saw": "cutting wood",
    "wrench": "turning nuts and bolts",
    "shovel": "digging soil",
    "ladder": "reaching high places",
    "brush": "painting walls",
}
ORDINALS = ["first", "second", "third"]
SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a concise assistant. Answer in one sentence.",
]

Dialogue = list[dict[str, str]]


def _pair(user: str, assistant: str) -> Dialogue:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def fruit_dialogue(rng: random.Random) -> Dialogue:
    names = rng.sample(sorted(FRUITS), 3)
    k = rng.randrange(3)
    pick = names[k]
    color, taste, where = FRUITS[pick]
    turns = _pair("Name three fruits.", f"Here are three fruits: {names[0]}, {names[1]} and {names[2]}.")
    turns += _pair(f"What color is the {ORDINALS[k]} one?", f"The {pick} is {color}.")
    turns += _pair("How does it taste?", f"The {pick} tastes {taste}.")
    if rng.random() < 0.6:
        turns += _pair("Where does it grow?", f"The {pick} grows in {where}.")
    if rng.random() < 0.5:
        other = names[(k + 1) % 3]
        turns += _pair(
            f"And the {other}?", f"The {other} is {FRUITS[other][0]} and tastes {FRUITS[other][1]}."
        )
    return turns


def animal_dialogue(rng: random.Random) -> Dialogue:
    a, b = rng.sample(sorted(ANIMALS), 2)
    turns = _pair(
        f"Tell me about the {a} and the {b}.", f"The {a} {ANIMALS[a][0]} and the {b} {ANIMALS[b][0]}."
    )
    first = rng.random() < 0.5
    pick = a if first else b
    ref = "the first one" if first else "the second one"
    turns += _pair(f"What does {ref} eat?", f"The {pick} eats {ANIMALS[pick][1]}.")
    turns += _pair("Where does it live?", f"The {pick} lives in {ANIMALS[pick][2]}.")
    if rng.random() < 0.5:
        other = b if first else a
        turns += _pair(
            "What about the other one?",
            f"The {other} eats {ANIMALS[other][1]} and lives in {ANIMALS[other][2]}.",
        )
    return turns


def country_dialogue(rng: random.Random) -> Dialogue:
    country = rng.choice(sorted(COUNTRIES))
    capital, language, continent = COUNTRIES[country]
    turns = _pair(f"What is the capital of {country}?", f"The capital of {country} is {capital}.")
    turns += _pair("Which continent is it on?", f"{country} is in {continent}.")
    turns += _pair("What language do people speak there?", f"People in {country} speak {language}.")
    if rng.random() < 0.5:
        other = rng.choice([c for c in sorted(COUNTRIES) if c != country])
        turns += _pair(f"And in {other}?", f"People in {other} speak {COUNTRIES[other][1]}.")
    return turns


def arithmetic_dialogue(rng: random.Random) -> Dialogue:
    x, y = rng.randint(2, 20), rng.randint(2, 20)
    total = x + y
    turns = _pair(f"What is {x} plus {y}?", f"{x} plus {y} is {total}.")
    turns += _pair("Now double that.", f"Double {total} is {2 * total}.")
    z = rng.randint(1, 9)
    turns += _pair(f"Subtract {z} from it.", f"{2 * total} minus {z} is {2 * total - z}.")
    if rng.random() < 0.4:
        turns += _pair(
            "Is the result even?", f"{2 * total - z} is {'even' if (2 * total - z) % 2 == 0 else 'odd'}."
        )
    return turns


def tool_dialogue(rng: random.Random) -> Dialogue:
    names = rng.sample(sorted(TOOLS), 3)
    k = rng.randrange(3)
    pick = names[k]
    turns = _pair(
        "Which tools should I keep in a shed?",
        f"Keep a {names[0]}, a {names[1]} and a {names[2]}.",
    )
    turns += _pair(f"What is the {ORDINALS[k]} one for?", f"A {pick} is for {TOOLS[pick]}.")
    turns += _pair("Is that safe for children?", f"A {pick} should be used by children only with an adult.")
    return turns


GENERATORS: list[Callable[[random.Random], Dialogue]] = [
    fruit_dialogue,
    animal_dialogue,
    country_dialogue,
    arithmetic_dialogue,
    tool_dialogue,
]


def make_dialogues(n: int, seed: int) -> list[dict]:
    """Return ``n`` dialogues in OpenAI ``messages`` format, deterministic in ``seed``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        messages = GENERATORS[i % len(GENERATORS)](rng)
        if rng.random() < 0.3:
            messages = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}, *messages]
        out.append({"id": f"chat-{i:04d}", "messages": messages})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "data/chat/dialogues.jsonl"
    )
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for d in make_dialogues(args.n, args.seed):
            f.write(json.dumps(d) + "\n")
    print(f"wrote {args.n} dialogues to {args.out}")


if __name__ == "__main__":
    main()
