"""Chat SFT steps on the real model, packed against padded, on the same rows.

    .venv/bin/python bench/packing.py [--data chats.jsonl] [--batch-size 4] [--max-length 1024] [--steps 3]

The model is SmolLM2-135M-Instruct (the test tier's real model, ``scripts/prepare_real_model.py``), fp32,
SDPA. The data: ``--data`` (any chat file), or by default 64 two-turn dialogues with long answers made
by ``bench/packing_data.py`` from the real dialogues of ``data/realmodel`` (about 37% padding in random
batches of 8 at 1024 tokens). One seeded shuffle, so every side sees the same batches of rows:

- **padded**: ``ChatDataModule`` batches right-padded to their longest row (today's path);
- **packed**: ``data.packing=true``: the rows end to end, position ids restarting per row, attention row
  by row (``sdpa_varlen``);
- **packed_mask** (``--mask-side``): packed, attention through transformers' block-diagonal mask
  (SDPA with a boolean mask over the whole packed sequence): the other CPU option.

Each side is ``SFTModule``'s loss (chunked LM head) with AdamW (lr 2e-5, no decay) and clipping at 1.0,
from the same initial weights, with gradient checkpointing (padded batches of 4 × 1024 would otherwise
hold about 11 GB of activations); the sides run interleaved in rounds at a fixed thread count.
Throughput is real (non-pad) tokens per second over the steps after ``--warmup``, by default per second
of the process's CPU time (one thread, so it counts the work done and not the other jobs sharing the
machine; ``--wall-clock`` for wall time; both are printed); every side's per-step losses must
equal the padded side's (first step to 1e-4, later steps to 1e-3, after the optimizer has acted on
gradients that differ by float rounding). Flex attention is not a side: torch has no flex-attention
backward on CPU (it raises NotImplementedError). The last line is JSON with ``ratio`` = packed ÷ padded
tokens/s (median over rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("QUARTET_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

LR = 2e-5


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="a chat file (default: bench/packing_data.py dialogues)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="steps left out of the timing")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--wall-clock", action="store_true", help="rate by wall clock (default: process CPU time)")
    p.add_argument("--mask-side", action="store_true", help="also time the block-diagonal-mask attention")
    p.add_argument(
        "--no-checkpointing",
        action="store_true",
        help="keep every activation (about 11 GB at batch 4 x 1024 padded; checkpointing is on by default)",
    )
    return p.parse_args()


def quiet() -> None:
    import logging

    import datasets
    import lightning  # noqa: F401
    import transformers

    for name in ("lightning", "lightning.pytorch", "transformers", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()


def real_model() -> Path:
    from tests.real_model_folder import prepare_real_model

    return prepare_real_model()


def loader(model_dir: Path, data: Path, args: argparse.Namespace, packing: bool) -> list[dict[str, Any]]:
    from datamodules.chat import ChatDataModule

    dm = ChatDataModule(
        path=str(data),
        tokenizer=str(model_dir),
        max_length=args.max_length,
        val_fraction=0.0,
        batch_size=args.batch_size,
        shuffle=True,
        seed=0,
        packing=packing,
    )
    dm.setup("fit")
    batches = []
    for batch in dm.train_dataloader():
        batches.append(batch)
        if len(batches) == args.steps:
            break
    return batches


def real_tokens(batch: dict[str, Any]) -> int:
    return int(batch["row_mask" if "row_mask" in batch else "attention_mask"].sum())


def run_side(
    model_dir: Path, batches: list[dict[str, Any]], args: argparse.Namespace, block_mask: bool
) -> dict[str, Any]:
    from lightning_modules.sft import SFTModule

    module = SFTModule(
        model={
            "kind": "hf",
            "pretrained": str(model_dir),
            "tokenizer": str(model_dir),
            "dtype": "float32",
            "attn_implementation": "sdpa",
            "gradient_checkpointing": not args.no_checkpointing,
            "lora": {"enabled": False},
        },
        optimizer={"_target_": "torch.optim.AdamW", "lr": LR, "weight_decay": 0.0},
    )
    module.configure_model()
    module.model.quartet_block_mask = block_mask
    opt = torch.optim.AdamW(module.model.parameters(), lr=LR, weight_decay=0.0)
    losses, tokens, t0, c0 = [], 0, 0.0, 0.0
    for step, batch in enumerate(batches):
        if step == args.warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        loss, _ = module._step(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step >= args.warmup:
            tokens += real_tokens(batch)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"tps": tokens / wall, "cpu_tps": tokens / cpu, "losses": losses}


def default_data(work: Path) -> Path:
    from packing_data import make_dialogues

    path = work / "two_turn_long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_dialogues(64, 0)))
    return path


def padding_share(batches: list[dict[str, Any]]) -> float:
    pads = [1 - float(b["attention_mask"].float().mean()) for b in batches]
    return statistics.mean(pads)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    model_dir = real_model()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else default_data(Path(tmp))
        padded = loader(model_dir, data, args, packing=False)
        packed = loader(model_dir, data, args, packing=True)
        sides = {"padded": (padded, False), "packed": (packed, False)}
        if args.mask_side:
            sides["packed_mask"] = (packed, True)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in sides}
        for _ in range(args.rounds):
            for name, (batches, block) in sides.items():
                runs[name].append(run_side(model_dir, batches, args, block))
                r = runs[name][-1]
                print(
                    f"  {name}: {r['tps']:.1f} tok/s wall, {r['cpu_tps']:.1f} per CPU-s, losses {r['losses']}",
                    flush=True,
                )
    ref = runs["padded"][0]["losses"]
    for name, rs in runs.items():
        for r in rs:
            assert abs(r["losses"][0] - ref[0]) < 1e-4, (
                f"{name}: first-step loss {r['losses'][0]} != {ref[0]}"
            )
            assert max(abs(a - b) for a, b in zip(r["losses"], ref)) < 1e-3, (
                f"{name}: losses differ from padded"
            )
    key = "tps" if args.wall_clock else "cpu_tps"
    tps = {k: statistics.median(r[key] for r in rs) for k, rs in runs.items()}
    wall = {k: statistics.median(r["tps"] for r in rs) for k, rs in runs.items()}
    ratios = [p[key] / q[key] for p, q in zip(runs["packed"], runs["padded"])]
    print(
        f"\n{'side':<12} {'tok/CPU-s' if key == 'cpu_tps' else 'tokens/s':>10} {'vs padded':>10} {'wall tok/s':>11}"
    )
    for name, v in tps.items():
        print(f"{name:<12} {v:>10.1f} {v / tps['padded']:>9.2f}x {wall[name]:>11.1f}")
    result = {
        "ratio": round(statistics.median(ratios), 3),
        "baseline": "padded batches (each padded to its longest row), same rows, same model and loss",
        "timing": "wall clock" if args.wall_clock else "process CPU time (one thread; the machine is shared)",
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "wall_tokens_per_s": {k: round(v, 1) for k, v in wall.items()},
        "gradient_checkpointing": not args.no_checkpointing,
        "padding_share_of_padded_batches": round(padding_share(padded), 3),
        "first_step_loss": {k: rs[0]["losses"][0] for k, rs in runs.items()},
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "threads": args.threads,
        "model": "SmolLM2-135M-Instruct fp32",
        "data": str(args.data or "bench/packing_data.py: 64 two-turn dialogues from data/realmodel"),
    }
    if "packed_mask" in tps:
        result["ratio_block_mask_vs_padded"] = round(tps["packed_mask"] / tps["padded"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
