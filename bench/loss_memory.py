"""Peak memory and time of one SFT loss forward + backward: the chunked LM-head loss against today's path.

    .venv/bin/python bench/loss_memory.py [--vocab 128256] [--hidden 512] [--tokens 2048] [--device cpu]

A Llama-3-sized head (128,256-token vocabulary) on a tiny Llama body (2 layers), fp32, a batch whose
positions all carry labels except each row's first. Two paths of ``algorithms.logprobs``:

- **full** (today's path, ``module.logprob_impl=full``): the LM head on the counted positions, the
  ``[N, V]`` logits at once, then cross-entropy;
- **chunked** (``module.logprob_impl=chunked``, the default): the head and the log-softmax chunk by
  chunk (``algorithms/chunked_ce.py``); the logits of one chunk at a time, recomputed in the backward.

Each path runs in its own process: on CPU the peak is the process's resident-set high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs`` right before the step) minus the resident set just
before it; on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before it. Time is the best
of ``--repeats`` steps. Loss and every gradient of the chunked path must equal the full path's (loss to
1e-5, gradients to 1e-5 of their largest value). The last line is JSON with ``ratio`` = full ÷ chunked
peak memory and ``time_ratio`` = chunked ÷ full step time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--tokens", type=int, default=2048, help="positions in the batch (2 rows)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--impl", default=None, help=argparse.SUPPRESS)  # the child process's path
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def build(args: argparse.Namespace):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config).to(args.device)
    ids = torch.randint(0, args.vocab, (2, args.tokens // 2), device=args.device)
    labels = ids.clone()
    labels[:, 0] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return model, batch


def child(args: argparse.Namespace) -> None:
    """One path: time, peak memory, loss and gradients (written to ``--out``)."""
    import torch

    from algorithms.logprobs import batch_token_logprobs, masked_nll

    torch.set_num_threads(args.threads)
    model, batch = build(args)
    cuda = args.device.startswith("cuda")
    times, peak = [], 0
    for _ in range(args.repeats):
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
            before = resident_kib("VmRSS") * 1024
        t0 = time.perf_counter()
        scores = batch_token_logprobs(model, batch, args.impl)
        loss = masked_nll(scores.logp, scores.mask)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        after = torch.cuda.max_memory_allocated() if cuda else resident_kib("VmHWM") * 1024
        peak = max(peak, after - before)
    grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters()}
    torch.save({"loss": float(loss), "grads": grads, "time": min(times), "peak": peak}, args.out)


def run_path(impl: str, args: argparse.Namespace, work: Path) -> dict:
    out = work / f"{impl}.pt"
    cmd = [sys.executable, __file__, "--impl", impl, "--out", str(out)]
    for k in ("vocab", "hidden", "layers", "tokens", "repeats", "threads", "device"):
        cmd += [f"--{k}", str(getattr(args, k))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    import torch

    return torch.load(out, weights_only=True)


def main() -> None:
    args = parse_args()
    if args.impl:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        full = run_path("full", args, Path(tmp))
        chunked = run_path("chunked", args, Path(tmp))
    assert abs(full["loss"] - chunked["loss"]) < 1e-5, (full["loss"], chunked["loss"])
    worst = 0.0
    for name, g in full["grads"].items():
        err = float((g - chunked["grads"][name]).abs().max() / g.abs().max().clamp(min=1e-12))
        worst = max(worst, err)
    assert worst < 1e-5, f"gradients differ: {worst:.2e} of the largest value"
    mib = 2**20
    logits_mib = args.tokens * args.vocab * 4 / mib
    print(f"{'path':<8} {'peak MiB':>10} {'step s':>8}   ([N, V] fp32 logits alone: {logits_mib:.0f} MiB)")
    for name, r in (("full", full), ("chunked", chunked)):
        print(f"{name:<8} {r['peak'] / mib:>10.0f} {r['time']:>8.2f}")
    result = {
        "ratio": round(full["peak"] / chunked["peak"], 2),
        "baseline": "full: the counted positions' [N, V] logits at once, then cross-entropy (logprob_impl=full)",
        "peak_mib": {"full": round(full["peak"] / mib), "chunked": round(chunked["peak"] / mib)},
        "step_s": {"full": round(full["time"], 3), "chunked": round(chunked["time"], 3)},
        "time_ratio": round(chunked["time"] / full["time"], 3),
        "loss": {"full": full["loss"], "chunked": chunked["loss"]},
        "max_grad_rel_diff": worst,
        "vocab": args.vocab,
        "hidden": args.hidden,
        "layers": args.layers,
        "tokens": args.tokens,
        "device": args.device,
        "threads": args.threads,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
