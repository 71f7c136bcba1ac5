"""Cost of an RLMECModule training step against an SFT training step over the same tokens.

    .venv/bin/python bench/rlmec_step.py [--samples N] [--batch-size B] [--steps S] [--rounds R] [--device cpu|cuda]

Both sides train the same model (the tiny Llama of ``conf/model/tiny.yaml`` at the ``reasoning_tiny``
size by default, identical initial weights) on the same collated batches: B policy samples from the
bundled arithmetic problems (half of them wrong) and their B rewrites in ONE batch of 2B rows
(``datamodules/rlmec_token_data.py``). A step is zero_grad, loss, backward, AdamW step:

- ``rlmec``: ``RLMECModule.compute_loss`` (one forward, the shared log-prob helper, the clipped
  token-level RL term on the originals and the weighted imitation term on the rewrites);
- ``sft``: ``SFTModule``'s step (``masked_causal_lm_loss`` on the full logits) over the same labels
  (original and rewrite tokens);
- ``sft_helper``: the plain token-mean NLL through the same log-prob helper as RLMEC, which isolates
  the cost of the RL machinery itself.

The variants run interleaved step by step (each step of a round runs every variant back to back on the
same batch, their order rotating each round) with a fixed torch thread count; a round's time of a
variant is its median step time after the warm-up, and each ratio is the median of per-round ratios
(RLMEC ÷ SFT; below 1 is cheaper).
The last line printed is one JSON object with ``ratio`` (vs ``sft``), ``ratio_same_helper``,
``baseline`` and the sizes measured. Goal: ratio ≤ 1.1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("QUARTET_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

VARIANTS = ("rlmec", "sft", "sft_helper")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=128, help="policy samples (bundled train problems)")
    p.add_argument("--batch-size", type=int, default=16, help="samples per batch (2x rows)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--device", default="cpu")
    return p.parse_args()


def model_cfg(args: argparse.Namespace) -> dict[str, Any]:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml"))
    cfg.update(
        tokenizer=str(ROOT / "assets" / "tokenizer"),
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_layers=args.layers,
    )
    return cfg


def make_batches(tokenizer: Any, args: argparse.Namespace) -> list[dict[str, torch.Tensor]]:
    """RL batches from bundled problems: even samples correct, odd ones with a wrong last number,
    rewritten to the gold; rewards from random GRM probabilities; reference log-probs random."""
    from algorithms.alignment import imitation_weights
    from algorithms.edit_steps import gold_solution
    from algorithms.token_rewards import grm_token_rewards
    from datamodules.rlmec_token_data import RLMECCollator
    from reasoning.questions import load_reasoning_records

    rng = random.Random(0)
    rows = []
    for i, rec in enumerate(
        load_reasoning_records(ROOT / "data" / "reasoning" / "train.jsonl", limit=args.samples)
    ):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": rec.question}], add_generation_prompt=True, tokenize=False
        )
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        gold = gold_solution(rec)
        correct = i % 2 == 0
        pred = gold if correct else gold.replace(f"= {rec.gold}", f"= {int(rec.gold) + 3}")
        eos = [tokenizer.eos_token_id]
        response = tokenizer(pred, add_special_tokens=False)["input_ids"] + eos
        rewrite = tokenizer(gold, add_special_tokens=False)["input_ids"] + eos
        probs = torch.tensor([rng.random() for _ in response])
        rows.append(
            {
                "prompt_ids": prompt,
                "response_ids": response,
                "rewards": grm_token_rewards(probs, correct).tolist(),
                "ref_logps": [-rng.uniform(0.5, 8.0) for _ in response],
                "rewrite_ids": rewrite,
                "weights": imitation_weights(response, rewrite, correct=correct),
                "correct": correct,
            }
        )
    collate = RLMECCollator(tokenizer.pad_token_id)
    b = args.batch_size
    return [collate(rows[i : i + b]) for i in range(0, len(rows) - b + 1, b)]


def build(kind: str, cfg: dict[str, Any], device: str) -> tuple[Any, torch.optim.Optimizer]:
    from lightning_modules.rlmec import RLMECModule
    from lightning_modules.sft import SFTModule

    opt_cfg = {"_target_": "torch.optim.AdamW", "lr": 1e-4, "weight_decay": 0.0}
    cls = RLMECModule if kind == "rlmec" else SFTModule
    torch.manual_seed(0)
    module = cls(model=cfg, optimizer=opt_cfg, scheduler=None)
    module.configure_model()
    module.to(device).train()
    return module, torch.optim.AdamW(module.model.parameters(), lr=1e-4, weight_decay=0.0)


def step_loss(kind: str, module: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    from algorithms.logprobs import model_token_logprobs

    if kind == "rlmec":
        return module.compute_loss(batch)[0]
    if kind == "sft":
        return module._step(batch)[0]
    logp, mask = model_token_logprobs(
        module.model, batch["input_ids"], batch["attention_mask"], batch["labels"]
    )
    return -logp.sum() / mask.sum()


def one_step(kind: str, module: Any, opt: torch.optim.Optimizer, batch: dict, device: str) -> float:
    """Seconds for one optimizer step (zero_grad, loss, backward, AdamW)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    step_loss(kind, module, batch).backward()
    opt.step()
    sync()
    return time.perf_counter() - t0


def run_round(
    modules: dict, order: tuple[str, ...], batches: list, args: argparse.Namespace
) -> dict[str, float]:
    """One round: every step runs each variant back to back on the same batch (so load changes on a
    shared machine hit all of them alike); returns each variant's median step time after the warm-up."""
    times: dict[str, list[float]] = {k: [] for k in order}
    for s in range(args.steps):
        for kind in order:
            t = one_step(kind, *modules[kind], batches[s % len(batches)], args.device)
            if s >= args.warmup:
                times[kind].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from models import load_tokenizer

    cfg = model_cfg(args)
    tokenizer = load_tokenizer(cfg["tokenizer"])
    batches = [{k: v.to(args.device) for k, v in b.items()} for b in make_batches(tokenizer, args)]
    modules = {k: build("rlmec" if k == "rlmec" else "sft", cfg, args.device) for k in VARIANTS}
    with torch.no_grad():  # same weights, same tokens: the NLL of both SFT variants agrees
        nll_full = step_loss("sft", modules["sft"][0], batches[0]).item()
        nll_helper = step_loss("sft_helper", modules["sft_helper"][0], batches[0]).item()
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for r in range(args.rounds):
        order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
        for kind, t in run_round(modules, order, batches, args).items():
            times[kind].append(t)
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{k} {1e3 * times[k][-1]:7.2f} ms/step" for k in VARIANTS)
            + f", ratio {times['rlmec'][-1] / times['sft'][-1]:.3f}",
            flush=True,
        )
    ratio = statistics.median(a / b for a, b in zip(times["rlmec"], times["sft"]))
    ratio_helper = statistics.median(a / b for a, b in zip(times["rlmec"], times["sft_helper"]))
    first = batches[0]
    rows, width = first["input_ids"].shape
    tokens = int(first["labels"].ne(-100).sum())
    print(
        f"\nRLMEC vs SFT step: {len(batches)} batches of {args.batch_size} samples ({rows} rows, width {width}, "
        f"{tokens} labelled tokens in the first), hidden {args.hidden}, {args.layers} layers, {args.device}, "
        f"{args.threads} thread(s); NLL full-logits {nll_full:.6f} vs helper {nll_helper:.6f}"
    )
    print(
        json.dumps(
            {
                "bench": "rlmec_step",
                "ratio": round(ratio, 3),
                "ratio_same_helper": round(ratio_helper, 3),
                "baseline": "SFTModule step (masked_causal_lm_loss on full logits) over the same 2B rows",
                "ms_per_step": {k: round(1e3 * statistics.median(v), 2) for k, v in times.items()},
                "samples_per_batch": args.batch_size,
                "rows_per_batch": rows,
                "batches": len(batches),
                "steps": args.steps,
                "warmup_steps": args.warmup,
                "rounds": args.rounds,
                "threads": args.threads,
                "device": args.device,
                "model": f"tiny llama: hidden {args.hidden}, {args.layers} layers, vocab {len(tokenizer)}, fp32",
                "nll_agree": abs(nll_full - nll_helper) < 1e-4,
            }
        )
    )


if __name__ == "__main__":
    main()
