"""One GRPO step of Quartet's OnlineRLModule against TRL's GRPOTrainer, like for like.

    .venv/bin/pip install -r requirements-bench.txt   # trl: a benchmark-only dependency
    .venv/bin/python bench/grpo_vs_trl.py [--prompts B] [--generations G] [--max-new-tokens L] [--rounds R]

Both sides train the same tiny random Llama (``conf/model/tiny.yaml``, saved once with
``save_pretrained`` and loaded by both) on the same B prompts (the first B problems of
``data/reasoning/train.jsonl`` as eval.py's chain-of-thought chat prompt), with G completions per prompt
of at most L tokens (temperature 1, no top-p/top-k), the answer-match reward of ``reasoning/answers.py``,
GRPO's loss (``loss_type="grpo"``: per-sequence mean, then mean; ε = 0.2; β = 0.04 with the k3 KL to a
frozen copy), group std scaling, μ = 1, AdamW at a constant lr, fp32, no gradient checkpointing.

Timed: one whole step (the first step of a fresh trainer; each side's step callbacks), and inside it the
generation (Quartet: ``OnlineRLModule.generate``; TRL: ``_generate_and_score_completions``, which also
scores and computes the old/reference log-probs). The sides run interleaved in rounds and the reported
ratio is the median of the per-round ratios of whole steps (TRL ÷ Quartet: > 1 means Quartet is faster).

Loss check: on TRL's own first-step completions, Quartet's ``clipped_surrogate_loss`` (policy and
reference log-probs from the module's shared-prefix path, ``OnlineRLModule.prefix_grid``, as its training
step takes them) must equal TRL's ``_compute_loss`` to 1e-4, and the reference log-probs TRL's.

The last line printed is one JSON object with ``ratio``, ``baseline`` and the sizes measured.
"""

from __future__ import annotations

import argparse
import copy
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
os.environ.setdefault("QUARTET_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

BETA, EPS, LR = 0.04, 0.2, 1e-4


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=8, help="B prompts per step")
    p.add_argument("--generations", type=int, default=8, help="G completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def make_model(out: Path) -> None:
    from omegaconf import OmegaConf

    from models import build_model, load_tokenizer

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml"))
    cfg["tokenizer"] = str(ROOT / "assets" / "tokenizer")
    tok = load_tokenizer(cfg["tokenizer"])
    torch.manual_seed(0)
    build_model(cfg, tok).save_pretrained(out)
    tok.save_pretrained(out)


def write_prompts(out: Path, n: int) -> Path:
    lines = (ROOT / "data" / "reasoning" / "train.jsonl").read_text().splitlines()[:n]
    out.write_text("\n".join(lines) + "\n")
    return out


# ---- Quartet ---------------------------------------------------------------------------------------
def run_ours(model_dir: Path, prompts: Path, args: argparse.Namespace) -> dict[str, float]:
    import lightning as L

    from datamodules.reasoning_prompts import ReasoningPromptDataModule
    from lightning_modules.online_rl import OnlineRLModule

    class Clock(L.Callback):
        def on_train_batch_start(self, *a: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, *a: Any) -> None:
            self.t1 = time.perf_counter()

    model_cfg = {"kind": "hf", "pretrained": str(model_dir), "tokenizer": str(model_dir), "dtype": "float32",
                 "attn_implementation": "sdpa", "gradient_checkpointing": False, "lora": {"enabled": False}}  # fmt: skip
    module = OnlineRLModule(
        model=model_cfg,
        optimizer={"_target_": "torch.optim.AdamW", "lr": LR, "weight_decay": 0.0},
        reward={"weights": {"answer_match": 1.0}},
        num_generations=args.generations,
        sampling={"temperature": 1.0, "max_new_tokens": args.max_new_tokens},
        beta=BETA,
        epsilon=EPS,
        max_grad_norm=1.0,
    )
    gen = {"s": 0.0}
    generate = module.generate

    def timed_generate(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        out = generate(*a, **k)
        gen["s"] += time.perf_counter() - t
        return out

    module.generate = timed_generate  # type: ignore[method-assign]
    dm = ReasoningPromptDataModule(
        path=str(prompts), tokenizer=str(model_dir), batch_size=args.prompts, shuffle=False
    )
    clock = Clock()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, callbacks=[clock],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False)  # fmt: skip
    L.seed_everything(0, verbose=False)
    trainer.fit(module, datamodule=dm)
    return {"step_s": clock.t1 - clock.t0, "gen_s": gen["s"]}


# ---- TRL -------------------------------------------------------------------------------------------
def trl_trainer(model_dir: Path, prompts: Path, work: Path, args: argparse.Namespace):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from algorithms.rewards import answer_match_reward
    from datamodules.reasoning import load_questions
    from reasoning.prompts import PromptSettings, build_cot_prompt

    records = load_questions(str(prompts), split="train")
    by_question = {r.question: r for r in records}
    settings = PromptSettings()
    rows = [{"prompt": build_cot_prompt(r, settings), "question": r.question} for r in records]

    def answer_match(prompts: Any, completions: Any, question: list[str], **_: Any) -> list[float]:
        return [answer_match_reward(c[0]["content"], by_question[q]) for c, q in zip(completions, question)]

    config = GRPOConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations, max_completion_length=args.max_new_tokens, temperature=1.0,
        top_p=1.0, beta=BETA, epsilon=EPS, loss_type="grpo", scale_rewards="group", learning_rate=LR,
        lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0, max_steps=1, use_cpu=True,
        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, gradient_checkpointing=False,
        shuffle_dataset=False, seed=0, bf16=False,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return GRPOTrainer(
        model=model,
        reward_funcs=answer_match,
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tok,
    )


def run_trl(
    model_dir: Path, prompts: Path, work: Path, args: argparse.Namespace, check: bool
) -> dict[str, float]:
    from transformers import TrainerCallback

    trainer = trl_trainer(model_dir, prompts, work, args)
    clock: dict[str, float] = {"gen_s": 0.0}

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            clock["t0"] = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            clock["t1"] = time.perf_counter()

    trainer.add_callback(Clock())
    original = trainer._generate_and_score_completions

    def timed(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        inputs = original(*a, **k)
        clock["gen_s"] += time.perf_counter() - t
        if check and "loss_diff" not in clock:  # the check's own time is taken out of the step
            t = time.perf_counter()
            clock["loss_diff"] = compare_losses(trainer, inputs)
            clock["check_s"] = time.perf_counter() - t
        return inputs

    trainer._generate_and_score_completions = timed  # type: ignore[method-assign]
    trainer.train()
    return {
        "step_s": clock["t1"] - clock["t0"] - clock.get("check_s", 0.0),
        "gen_s": clock["gen_s"],
        **({"loss_diff": clock["loss_diff"]} if check else {}),
    }


@torch.no_grad()
def compare_losses(trainer: Any, inputs: dict[str, Any]) -> float:
    """The largest of |TRL − Quartet| over: the reference log-probs of TRL's completions, and the loss on
    them with non-zero advantages (a ramp over the completions) and a reference shifted by ±0.3 per
    token (so the KL term is not 0), both computed before the update."""
    from algorithms.losses.policy_gradient import clipped_surrogate_loss
    from algorithms.rollouts import rollout_tensors
    from lightning_modules.online_rl import OnlineRLModule

    g = trainer.num_generations  # TRL's rows: each prompt G times in a row, as Quartet's groups
    prompts = [ids[m.bool()].tolist() for ids, m in zip(inputs["prompt_ids"], inputs["prompt_mask"])][::g]
    cmask = inputs["completion_mask"].bool()
    rows = [ids[m].tolist() for ids, m in zip(inputs["completion_ids"], cmask)]
    completions = [rows[i : i + g] for i in range(0, len(rows), g)]
    t = rollout_tensors(prompts, completions, trainer.processing_class.pad_token_id, with_prefix=True)
    mask = t.labels[:, 1:].ne(-100)  # the module's own (shared-prefix) path, as in its training step
    logp = OnlineRLModule.prefix_grid(trainer.model, t)
    ref_model = trainer.ref_model if trainer.ref_model is not None else copy.deepcopy(trainer.model)
    ref = OnlineRLModule.prefix_grid(ref_model, t)
    ref_diff = float((ref[mask] - inputs["ref_per_token_logps"][cmask]).abs().max())
    shift = 0.3 * (torch.arange(cmask.numel()).reshape(cmask.shape) % 3 - 1).float()
    probe = {**inputs, "advantages": torch.linspace(-1.0, 1.0, cmask.shape[0]),
             "ref_per_token_logps": inputs["ref_per_token_logps"] + shift}  # fmt: skip
    trl_loss = float(trainer._compute_loss(trainer.model, probe))
    ours_ref = torch.zeros_like(ref).masked_scatter(mask, probe["ref_per_token_logps"][cmask])
    ours, _ = clipped_surrogate_loss(
        logp, logp, probe["advantages"], mask, ref_logps=ours_ref, beta=BETA, epsilon=EPS
    )
    print(
        f"loss on TRL's completions (ramp advantages, shifted reference): TRL {trl_loss:.6f}, Quartet {float(ours):.6f}"
    )
    return max(ref_diff, abs(trl_loss - float(ours)))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_model(work / "model")
        prompts = write_prompts(work / "prompts.jsonl", args.prompts)
        rows = []
        for r in range(args.rounds):
            ours = run_ours(work / "model", prompts, args)
            trl = run_trl(work / "model", prompts, work, args, check=r == 0)
            rows.append((ours, trl))
            print(f"round {r}: quartet step {ours['step_s']:.2f} s (generation {ours['gen_s']:.2f} s) | "
                  f"TRL step {trl['step_s']:.2f} s (generation+scoring {trl['gen_s']:.2f} s)", flush=True)  # fmt: skip
    loss_diff = rows[0][1]["loss_diff"]
    med = {k: statistics.median(x[i][k] for x in rows) for i, k in ((0, "step_s"), (0, "gen_s"))}
    med_trl = {k: statistics.median(x[1][k] for x in rows) for k in ("step_s", "gen_s")}
    ratio = statistics.median(x[1]["step_s"] / x[0]["step_s"] for x in rows)
    print("\n| side | whole step (s) | generation (s) | training (s) |\n|---|---|---|---|")
    print(
        f"| Quartet OnlineRLModule | {med['step_s']:.2f} | {med['gen_s']:.2f} | {med['step_s'] - med['gen_s']:.2f} |"
    )
    print(
        f"| TRL GRPOTrainer | {med_trl['step_s']:.2f} | {med_trl['gen_s']:.2f} (+ scoring, old/ref log-probs) | {med_trl['step_s'] - med_trl['gen_s']:.2f} |"
    )
    print(
        f"\nloss |TRL − Quartet| on TRL's completions: {loss_diff:.2e} ({'ok' if loss_diff <= 1e-4 else 'MISMATCH'})"
    )
    summary = {"ratio": round(ratio, 3), "baseline": "trl.GRPOTrainer (one step, same model/prompts/G/L/loss)",
               "prompts": args.prompts, "generations": args.generations, "max_new_tokens": args.max_new_tokens,
               "rounds": args.rounds, "loss_diff": loss_diff}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
