"""Training throughput of Quartet's CaPOModule against TRL's DPOTrainer, like for like.

    .venv/bin/pip install -r requirements-bench.txt   # trl: a benchmark-only dependency
    .venv/bin/python bench/capo_vs_trl.py [--pairs N] [--batch-size B] [--steps S] [--rounds R]

Both sides train the same tiny random Llama (saved once with ``save_pretrained`` and loaded by both),
on the same pairs (the bundled ``data/capo/pairs.jsonl``, read in the same sequential order), with the
same batch, steps, loss (sigmoid, β = 0.1), optimizer (fused AdamW, constant lr, no weight decay,
gradient clipping at 1.0), fp32, no gradient checkpointing (TRL turns it on by default; it is turned
off here), no checkpoints, no progress bars and one log line every 10 steps. Each reference mode is
compared with TRL in the same mode: a live frozen copy against TRL's default reference model, and
precomputed reference log-probs against ``precompute_ref_log_probs=True`` (the pre-pass is outside the
timed window on both sides). ``--shared-prompt false`` times ours with the plain forward (each
prompt run for both rows), the path before ``module.shared_prompt``.

Throughput is pairs per second over the steps after ``--warmup``, measured by step callbacks on both
sides. The variants run interleaved in rounds (ours, TRL, ours, TRL, ...) with a fixed torch thread
count, and the reported ratio is the median of the per-round ratios (DESIGN.md, benchmarks). The
tokenisation of both sides is compared pair by pair, and the first-step losses must agree to 1e-4.

The last line printed is one JSON object: ``ratio`` (ours ÷ TRL, live reference), ``baseline``,
``ratio_precomputed`` and the sizes measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("QUARTET_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

BETA, LR, LOG_EVERY = 0.1, 1e-4, 10
MODES = {"live": ("copy", False), "precomputed": ("precomputed", True)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data" / "capo" / "pairs.jsonl"))
    p.add_argument("--pairs", type=int, default=512, help="pairs used (the first N of --data)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--modes", default="live,precomputed")
    p.add_argument(
        "--shared-prompt",
        choices=("auto", "false"),
        default="auto",
        help="ours: module.shared_prompt (auto: each pair's prompt runs once; false: the plain forward)",
    )
    return p.parse_args()


def quiet() -> None:
    import lightning  # noqa: F401 - imported first: it sets its own log levels on import
    import trl  # noqa: F401

    for name in (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "transformers",
        "trl",
        "datasets",
        "accelerate",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()


def make_model(out: Path) -> None:
    """The tiny model of ``conf/model/tiny.yaml`` with the shipped tokenizer, saved for both sides."""
    from omegaconf import OmegaConf

    from models import build_model, load_tokenizer

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml"))
    cfg["tokenizer"] = str(ROOT / "assets" / "tokenizer")
    tok = load_tokenizer(cfg["tokenizer"])
    torch.manual_seed(0)
    build_model(cfg, tok).save_pretrained(out)
    tok.save_pretrained(out)


# ---- ours ----------------------------------------------------------------------------------------
def run_ours(model_dir: Path, pairs: Path, work: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from datamodules.preference import PreferenceDataModule
    from lightning_modules.capo import CaPOModule

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.t0 = self.t1 = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: ANN001
            if batch_idx == args.warmup:
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
            self.losses.append(float(outputs["loss"]))
            self.t1 = time.perf_counter()

    reference, _ = MODES[mode]
    model_cfg = {
        "kind": "hf",
        "pretrained": str(model_dir),
        "tokenizer": str(model_dir),
        "dtype": "float32",
        "attn_implementation": "sdpa",
        "gradient_checkpointing": False,
        "lora": {"enabled": False},
    }
    dm = PreferenceDataModule(
        path=str(pairs),
        tokenizer=str(model_dir),
        val_fraction=0.0,
        max_length=1024,
        cache_dir=str(work / "cache"),
        batch_size=args.batch_size,
        eval_batch_size=args.batch_size,
        shuffle=False,
        seed=0,
    )
    module = CaPOModule(
        model=model_cfg,
        optimizer={"_target_": "torch.optim.AdamW", "lr": LR, "weight_decay": 0.0, "fused": True},
        scheduler=None,
        beta=BETA,
        reference=reference,
        precompute_batch_size=args.batch_size,
        shared_prompt=False if args.shared_prompt == "false" else "auto",
    )
    clock = Clock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=args.steps,
        gradient_clip_val=1.0,
        log_every_n_steps=LOG_EVERY,
        logger=CSVLogger(str(work), name=f"ours-{mode}"),
        callbacks=[clock],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
    )
    L.seed_everything(0, verbose=False)
    trainer.fit(module, datamodule=dm)
    timed = len(clock.losses) - args.warmup
    return {"pps": timed * args.batch_size / (clock.t1 - clock.t0), "losses": clock.losses}


# ---- TRL -----------------------------------------------------------------------------------------
def trl_dataset(pairs: Path):
    import datasets

    rows = [json.loads(line) for line in pairs.read_text().splitlines() if line.strip()]
    return datasets.Dataset.from_list(
        [
            {
                "prompt": r["messages"],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
    )


def trl_trainer(model_dir: Path, pairs: Path, work: Path, mode: str, args: argparse.Namespace, callbacks=()):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    _, precompute = MODES[mode]
    config = DPOConfig(
        output_dir=str(work / f"trl-{mode}"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        beta=BETA,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=precompute,
        precompute_ref_batch_size=args.batch_size,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        max_length=1024,
        logging_steps=LOG_EVERY,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        train_sampling_strategy="sequential",
        seed=0,
    )
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return DPOTrainer(
        model=model,
        args=config,
        train_dataset=trl_dataset(pairs),
        processing_class=tok,
        callbacks=list(callbacks),
    )


def run_trl(model_dir: Path, pairs: Path, work: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = self.t1 = 0.0
            self.steps = 0

        def on_step_begin(self, a, state, control, **kw):  # noqa: ANN001
            if state.global_step == args.warmup:
                self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):  # noqa: ANN001
            self.steps = state.global_step
            self.t1 = time.perf_counter()

    clock = Clock()
    trainer = trl_trainer(model_dir, pairs, work, mode, args, [clock])
    losses: list[float] = []
    compute_loss = trainer.compute_loss

    def recording_compute_loss(*a, **kw):  # noqa: ANN002, ANN003
        out = compute_loss(*a, **kw)
        losses.append(float((out[0] if isinstance(out, tuple) else out).detach()))
        return out

    trainer.compute_loss = recording_compute_loss
    trainer.train()
    timed = clock.steps - args.warmup
    return {"pps": timed * args.batch_size / (clock.t1 - clock.t0), "losses": losses}


def token_parity(model_dir: Path, pairs: Path, work: Path, args: argparse.Namespace) -> int:
    """Pairs whose (prompt, chosen, rejected) token ids differ between the two sides (0 expected)."""
    from datamodules.preference import PreferenceDataModule

    dm = PreferenceDataModule(
        path=str(pairs),
        tokenizer=str(model_dir),
        val_fraction=0.0,
        max_length=1024,
        cache_dir=str(work / "cache"),
    )
    dm.setup("fit")
    trl = trl_trainer(model_dir, pairs, work, "live", args).train_dataset
    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    return sum(1 for a, b in zip(dm.train_dataset, trl) if any(list(a[k]) != list(b[k]) for k in keys))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="capo_bench_") as tmp:
        work = Path(tmp)
        make_model(work / "model")
        mc = json.loads((work / "model" / "config.json").read_text())
        model_desc = (
            f"tiny {mc['model_type']}: hidden {mc['hidden_size']}, {mc['num_hidden_layers']} layers, "
            f"vocab {mc['vocab_size']}, fp32"
        )
        rows = [line for line in Path(args.data).read_text().splitlines() if line.strip()][: args.pairs]
        pairs = work / "pairs.jsonl"
        pairs.write_text("\n".join(rows) + "\n")
        mismatched = token_parity(work / "model", pairs, work, args)
        results: dict[str, dict[str, list]] = {m: {"ours": [], "trl": [], "ratio": []} for m in modes}
        first_loss: dict[str, dict[str, float]] = {}
        last_loss: dict[str, dict[str, float]] = {}
        for r in range(args.rounds):
            for mode in modes:
                ours = run_ours(work / "model", pairs, work / f"r{r}", mode, args)
                trl = run_trl(work / "model", pairs, work / f"r{r}", mode, args)
                res = results[mode]
                res["ours"].append(ours["pps"])
                res["trl"].append(trl["pps"])
                res["ratio"].append(ours["pps"] / trl["pps"])
                first_loss[mode] = {"ours": ours["losses"][0], "trl": trl["losses"][0]}
                last_loss[mode] = {"ours": ours["losses"][-1], "trl": trl["losses"][-1]}
                print(
                    f"round {r + 1}/{args.rounds} {mode:>11}: ours {ours['pps']:7.1f} pairs/s, "
                    f"TRL {trl['pps']:7.1f} pairs/s, ratio {ours['pps'] / trl['pps']:.2f}",
                    flush=True,
                )
    print()
    print(
        f"CaPO vs TRL DPOTrainer: {args.pairs} pairs, batch {args.batch_size}, {args.steps} steps "
        f"({args.warmup} warm-up), {args.rounds} rounds, {args.threads} torch thread(s), "
        f"ours with module.shared_prompt={args.shared_prompt}"
    )
    print(
        f"{'reference':>12} | {'ours pairs/s':>12} | {'TRL pairs/s':>11} | {'ratio':>5} | "
        f"{'1st loss ours':>13} | {'1st loss TRL':>12} | {'|diff|':>8} | {'last |diff|':>11}"
    )
    print("-" * 104)
    summary: dict[str, Any] = {}
    for mode in modes:
        res = results[mode]
        f, la = first_loss[mode], last_loss[mode]
        diff, last_diff = abs(f["ours"] - f["trl"]), abs(la["ours"] - la["trl"])
        summary[mode] = {
            "ours_pairs_per_s": round(statistics.median(res["ours"]), 2),
            "trl_pairs_per_s": round(statistics.median(res["trl"]), 2),
            "ratio": round(statistics.median(res["ratio"]), 3),
            "ratios": [round(x, 3) for x in res["ratio"]],
            "first_step_loss": {"ours": f["ours"], "trl": f["trl"], "abs_diff": diff},
            "last_step_loss_abs_diff": last_diff,
        }
        print(
            f"{mode:>12} | {statistics.median(res['ours']):12.1f} | {statistics.median(res['trl']):11.1f} | "
            f"{statistics.median(res['ratio']):5.2f} | {f['ours']:13.6f} | {f['trl']:12.6f} | {diff:8.1e} | "
            f"{last_diff:11.1e}"
        )
    ok = all(s["first_step_loss"]["abs_diff"] <= 1e-4 for s in summary.values()) and mismatched == 0
    print(f"token ids differ on {mismatched} of {args.pairs} pairs; first-step losses equal to 1e-4: {ok}")
    import trl

    line = {
        "bench": "capo_vs_trl",
        "ratio": summary["live"]["ratio"] if "live" in summary else None,
        "baseline": f"trl=={trl.__version__} DPOTrainer, live reference model",
        "ratio_precomputed": summary.get("precomputed", {}).get("ratio"),
        "modes": summary,
        "pairs": args.pairs,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "rounds": args.rounds,
        "threads": args.threads,
        "shared_prompt": args.shared_prompt,
        "model": model_desc,
        "token_mismatches": mismatched,
        "first_step_losses_equal": ok,
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
