"""Turn a training checkpoint into an ``hf_model/`` folder loadable by ``transformers``.

    python scripts/consolidate_checkpoint.py <run>/checkpoints/last.ckpt [--out <run>/hf_model] [--overwrite]

The checkpoint is a sharded folder (``trainer=fsdp``) or a single file; one process, no GPU needed.
The output holds the model (LoRA merged; the Quartet MoE with its modeling code, load it with
``trust_remote_code=True``) and the tokenizer, identical to what the run itself exports. The default
``--out`` is ``<run>/hf_model`` for ``last.ckpt`` and ``<run>/hf_model-<name>`` for another
checkpoint. Bad input: one ``error:`` line and exit status 2. See docs/fsdp.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("QUARTET_ROOT", str(ROOT))

from utils.errors import QuartetError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", type=Path, help="<run>/checkpoints/<name>.ckpt (sharded folder or file)"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <run>/hf_model)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    args = parser.parse_args(argv)
    from checkpoints.consolidate import consolidate

    try:
        out = consolidate(args.checkpoint, args.out, overwrite=args.overwrite)
    except QuartetError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
