"""Generate Quartet's bundled LM corpus (``data/corpus/train.txt``, ``data/corpus/val.txt``).

Short encyclopedia-style paragraphs built from a seeded grammar over small fact tables (animals,
places, numbers, weather, simple arithmetic). Some sentences are easy to predict (fixed facts,
templates), others hard (random numbers, names): a mix that gives a Top-P router something to do.
One paragraph per line.

Usage: ``python scripts/make_lm_corpus.py [--paragraphs 4000] [--seed 0]``
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANIMALS = {
    "cat": ("small", "mice", "houses", "meows"),
    "dog": ("loyal", "meat", "houses", "barks"),
    "horse": ("strong", "hay", "stables", "neighs"),
    "owl": ("wise", "mice", "forests", "hoots"),
    "frog": ("green", "flies", "ponds", "croaks"),
    "lion": ("brave", "zebras", "savannas", "roars"),
    "duck": ("noisy", "seeds", "lakes", "quacks"),
    "bee": ("busy", "nectar", "hives", "buzzes"),
    "whale": ("huge", "krill", "oceans", "sings"),
    "goat": ("stubborn", "grass", "hills", "bleats"),
}
PLACES = {
    "Paris": ("France", "the Seine"),
    "Cairo": ("Egypt", "the Nile"),
    "London": ("England", "the Thames"),
    "Rome": ("Italy", "the Tiber"),
    "Vienna": ("Austria", "the Danube"),
    "Budapest": ("Hungary", "the Danube"),
    "Lisbon": ("Portugal", "the Tagus"),
    "Prague": ("Czechia", "the Vltava"),
}
NAMES = ["Ada", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena"]
WEATHER = ["sunny", "rainy", "windy", "cloudy", "snowy", "foggy"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def animal(rng: random.Random) -> str:
    a = rng.choice(sorted(ANIMALS))
    adj, food, home, sound = ANIMALS[a]
    parts = [
        f"The {a} is a {adj} animal.",
        f"It eats {food} and lives in {home}.",
        f"When it is happy, the {a} {sound}.",
    ]
    rng.shuffle(parts)
    return " ".join(parts)


def place(rng: random.Random) -> str:
    city = rng.choice(sorted(PLACES))
    country, river = PLACES[city]
    n = rng.randint(2, 9)
    return (
        f"{city} is the capital of {country}. The river {river[4:]} flows through {city}. "
        f"Last year {n} million people visited {city}."
    )


def story(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    x, y = rng.randint(2, 30), rng.randint(2, 30)
    day, w = rng.choice(DAYS), rng.choice(WEATHER)
    return (
        f"On {day} it was {w}. {a} had {x} apples and {b} had {y} apples. "
        f"Together they had {x + y} apples. {a} gave {min(x, y)} apples to a friend."
    )


def arithmetic(rng: random.Random) -> str:
    x, y = rng.randint(1, 50), rng.randint(1, 50)
    return f"{x} plus {y} equals {x + y}. {x} times 2 equals {2 * x}. {y} minus 1 equals {y - 1}."


def counting(rng: random.Random) -> str:
    start = rng.randint(1, 90)
    return "Counting up: " + ", ".join(str(i) for i in range(start, start + rng.randint(4, 9))) + "."


KINDS = [animal, place, story, arithmetic, counting]


def paragraph(rng: random.Random) -> str:
    return " ".join(rng.choice(KINDS)(rng) for _ in range(rng.randint(2, 4)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paragraphs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "data" / "corpus")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    lines = [paragraph(rng) for _ in range(args.paragraphs)]
    n_val = max(1, len(lines) // 20)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "train.txt").write_text("\n".join(lines[n_val:]) + "\n")
    (args.out_dir / "val.txt").write_text("\n".join(lines[:n_val]) + "\n")
    print(f"wrote {len(lines) - n_val} train and {n_val} val paragraphs to {args.out_dir}")


if __name__ == "__main__":
    main()
