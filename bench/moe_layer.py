"""Benchmark: our MoE layer (forward + backward) against transformers' Mixtral sparse MoE block and dense
SwiGLU MLPs with the same activated FLOPs.

Rows per token count T (hidden H, expert intermediate I, E experts):
  * ours top-2 (renormalised top-k, i.e. Mixtral routing) with the default dispatch;
  * transformers ``MixtralSparseMoeBlock`` with the same weights and tokens, once per experts
    implementation (``config._experts_implementation`` in transformers 5.x: "eager", "grouped_mm",
    "batched_mm"); implementations that raise, or whose estimated memory exceeds the budget, are skipped
    with the reason printed;
  * dense SwiGLU with intermediate 2*I (same activated FLOPs as top-2), on the same oneDNN kernels as
    ours (``model.cpu_linear=auto``): the practical limit;
  * ours top-p (p = 0.4, random router init with std --router-std) and a dense SwiGLU with
    intermediate round(avg_experts_per_token * I).

Variants run interleaved in rounds (A, B, C, A, B, C, ...); reported numbers are medians over rounds, and
ratios are medians of per-round ratios. The LAST line printed is one JSON object; its "ratio" is the worst
case over token counts of (fastest transformers implementation time / our top-2 time): > 1 means we are
faster.

    python bench/moe_layer.py [--threads 1] [--rounds 8] [--tokens 512 2048 8192]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.cpu_linear import mode_min_macs, use_onednn_linears
from models.moe import (
    DEFAULT_DISPATCH,
    MoELayer,
    RouterConfig,
    available_dispatch_impls,
)

HF_IMPLS = ("eager", "grouped_mm", "batched_mm")


class DenseSwiGLU(nn.Module):
    """Dense SwiGLU with a fused gate/up projection (one GEMM in, one out): the fastest dense form, on the
    kernels Quartet's experts use (``model.cpu_linear=auto``: float32 CPU products on oneDNN), so that
    "ours over dense" compares routing and dispatch, not GEMM libraries."""

    def __init__(self, hidden: int, inter: int, cpu_linear: str = "auto") -> None:
        super().__init__()
        self.gate_up = nn.Linear(hidden, 2 * inter, bias=False)
        self.down = nn.Linear(inter, hidden, bias=False)
        use_onednn_linears(self, cpu_linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def build_mixtral(ours: MoELayer, hidden: int, inter: int, experts: int, impl: str) -> nn.Module:
    """transformers' Mixtral sparse MoE block carrying ``ours``'s router and expert weights."""
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    cfg = MixtralConfig(
        hidden_size=hidden,
        intermediate_size=inter,
        num_local_experts=experts,
        num_experts_per_tok=2,
        router_jitter_noise=0.0,
    )
    cfg._experts_implementation = impl
    block = MixtralSparseMoeBlock(cfg)
    with torch.no_grad():
        block.gate.weight.copy_(ours.router.weight)
        block.experts.gate_up_proj.copy_(ours.experts.gate_up_proj)
        block.experts.down_proj.copy_(ours.experts.down_proj)
    return block


def make_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, tuple_out: bool) -> Callable[[], None]:
    """One forward + backward; gradients are dropped (set to None) before each step."""

    def step() -> None:
        for p in module.parameters():
            p.grad = None
        x.grad = None
        out = module(x)
        if tuple_out:
            out = out[0]
        out.backward(grad)

    return step


def time_rounds(
    steps: dict[str, Callable[[], None]], rounds: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Run every step once per round, interleaved, after one warm-up round; seconds per step by ``clock``
    (wall time, or ``time.process_time``: the process's CPU time, which on one thread counts the step's
    own work and not the other jobs of a shared machine)."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            synchronize()
            t0 = clock()
            step()
            synchronize()
            times[name].append(clock() - t0)
    return times


def synchronize() -> None:
    """Wait for queued GPU work (``--device cuda``), so a step's time is its own."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


def bench_tokens(args: argparse.Namespace, tokens: int, skipped: dict[str, str]) -> dict:
    hidden, inter, experts = args.hidden, args.intermediate, args.experts
    torch.manual_seed(args.seed)
    x = torch.randn(1, tokens, hidden, requires_grad=True)
    grad = torch.randn(1, tokens, hidden)

    top2 = MoELayer(
        hidden, inter, experts, RouterConfig(kind="top_k", top_k=2, renormalize=True), args.dispatch
    )
    top2.experts.reset_parameters()
    nn.init.normal_(top2.router.weight, std=args.router_std)
    topp = MoELayer(hidden, inter, experts, RouterConfig(kind="top_p", top_p=args.top_p), args.dispatch)
    topp.load_state_dict(top2.state_dict())
    for layer in (top2, topp):  # the experts' kernels as the model factory sets them
        use_onednn_linears(layer, args.cpu_linear)
    with torch.no_grad():
        k_mean = topp.router(x.reshape(-1, hidden)).mask.sum(-1).float().mean().item()
    dense_inter_p = max(1, round(k_mean * inter))

    steps: dict[str, Callable[[], None]] = {"ours_top2": make_step(top2, x, grad, True)}
    with torch.no_grad():
        ref_out = top2(x)[0]
    max_diff: dict[str, float] = {}
    for impl in HF_IMPLS:
        if impl == "batched_mm":
            # batched_mm gathers a full copy of the expert weights for every (token, expert) pair.
            gathered = 2 * tokens * 3 * inter * hidden * 4 * 2  # pairs * weights * fp32 bytes * (fwd + grad)
            if gathered > args.memory_budget_gib * 2**30:
                skipped[f"{impl}@{tokens}"] = (
                    f"gathers per-pair expert weights: ~{gathered / 2**30:.1f} GiB for fwd+bwd "
                    f"> budget {args.memory_budget_gib} GiB (a single step at 512 tokens took 7-14 s here)"
                )
                continue
        try:
            block = build_mixtral(top2, hidden, inter, experts, impl)
            with torch.no_grad():
                out = block(x)
            max_diff[impl] = (out - ref_out).abs().max().item()
            make_step(block, x, grad, False)()
        except Exception as err:  # noqa: BLE001 - report any failure of a baseline and go on
            skipped[f"{impl}@{tokens}"] = f"{type(err).__name__}: {err}"
            continue
        steps[f"hf_{impl}"] = make_step(block, x, grad, False)
    if args.other_dispatch:
        for impl in available_dispatch_impls(args.device, torch.float32):
            if impl != args.dispatch:
                other = MoELayer(hidden, inter, experts, top2.router.config, impl)
                other.load_state_dict(top2.state_dict())
                use_onednn_linears(other, args.cpu_linear)
                steps[f"dispatch_{impl}"] = make_step(other, x, grad, True)
    steps["dense_2I"] = make_step(DenseSwiGLU(hidden, 2 * inter, args.cpu_linear), x, grad, False)
    steps["ours_topp"] = make_step(topp, x, grad, True)
    steps["dense_kI"] = make_step(DenseSwiGLU(hidden, dense_inter_p, args.cpu_linear), x, grad, False)

    rounds = max(3, round(args.rounds * min(2.0, (2048 / tokens) ** 0.5)))
    clock = time.process_time if args.cpu_time and args.device == "cpu" else time.perf_counter
    times = time_rounds(steps, rounds, clock)
    hf_names = [n for n in times if n.startswith("hf_")]
    ours = times["ours_top2"]
    fastest_hf = [min(times[n][r] for n in hf_names) for r in range(rounds)] if hf_names else None
    return {
        "tokens": tokens,
        "rounds": rounds,
        "avg_experts_top_p": k_mean,
        "dense_equiv_intermediate_top_p": dense_inter_p,
        "median_ms": {n: 1e3 * statistics.median(t) for n, t in times.items()},
        "hf_over_ours": {n[3:]: median_ratio(times[n], ours) for n in hf_names},
        "dispatch_over_default": {
            n[9:]: median_ratio(times[n], ours) for n in times if n.startswith("dispatch_")
        },
        "fastest_hf_over_ours": median_ratio(fastest_hf, ours) if fastest_hf else None,
        "ours_over_dense": median_ratio(ours, times["dense_2I"]),
        "topp_over_dense_equiv": median_ratio(times["ours_topp"], times["dense_kI"]),
        "max_abs_diff_vs_hf": max_diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--intermediate", type=int, default=512)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-p", type=float, default=0.4)
    parser.add_argument("--dispatch", default=DEFAULT_DISPATCH)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 = robust on shared CPUs)"
    )
    parser.add_argument(
        "--rounds", type=int, default=8, help="rounds at 2048 tokens (more below, fewer above)"
    )
    parser.add_argument(
        "--router-std",
        type=float,
        default=0.06,
        help="router init std; 0.06 gives ~1.8 experts/token at p=0.4 here (the paper reports 1.76)",
    )
    parser.add_argument("--memory-budget-gib", type=float, default=2.0)
    parser.add_argument(
        "--cpu-linear",
        default="auto",
        choices=("auto", "onednn", "aten"),
        help="model.cpu_linear for our layers and the dense rows (auto: as the model factory on this CPU)",
    )
    parser.add_argument(
        "--no-other-dispatch",
        dest="other_dispatch",
        action="store_false",
        help="skip the rows timing our non-default dispatch implementations",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by process CPU time (CPU only; default wall clock)",
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda (scripts/gpu_check.sh passes cuda)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_default_device(args.device)  # every layer and tensor of the bench lives there

    skipped: dict[str, str] = {}
    results = [bench_tokens(args, t, skipped) for t in args.tokens]

    print(
        f"MoE layer fwd+bwd, hidden={args.hidden} expert_intermediate={args.intermediate} "
        f"experts={args.experts} threads={args.threads} dispatch={args.dispatch!r} (median ms; ratios = "
        "median of per-round ratios)"
    )
    header = f"{'tokens':>7} {'variant':<26} {'ms':>9}  note"
    print(header)
    print("-" * len(header))
    for r in results:
        ms = r["median_ms"]
        t = r["tokens"]
        print(f"{t:>7} {'ours top-2':<26} {ms['ours_top2']:9.2f}  {r['ours_over_dense']:.2f}x dense 2I")
        for impl, ratio in r["hf_over_ours"].items():
            note = f"{ratio:.2f}x ours (diff vs ours {r['max_abs_diff_vs_hf'][impl]:.1e})"
            print(f"{t:>7} {'transformers ' + impl:<26} {ms['hf_' + impl]:9.2f}  {note}")
        for impl, ratio in r["dispatch_over_default"].items():
            note = f"{ratio:.2f}x the time of ours ({args.dispatch!r} dispatch)"
            print(f"{t:>7} {'ours top-2 ' + repr(impl):<26} {ms['dispatch_' + impl]:9.2f}  {note}")
        print(f"{t:>7} {'dense SwiGLU I=2x512':<26} {ms['dense_2I']:9.2f}  practical limit for top-2")
        k, di = r["avg_experts_top_p"], r["dense_equiv_intermediate_top_p"]
        note = f"{k:.2f} experts/token, {r['topp_over_dense_equiv']:.2f}x its dense equivalent"
        print(f"{t:>7} {f'ours top-p p={args.top_p}':<26} {ms['ours_topp']:9.2f}  {note}")
        print(f"{t:>7} {f'dense SwiGLU I={di}':<26} {ms['dense_kI']:9.2f}  dense equivalent of top-p")
    if skipped:
        print("skipped baselines:")
        for name, why in skipped.items():
            print(f"  {name}: {why}")

    fastest = [r["fastest_hf_over_ours"] for r in results if r["fastest_hf_over_ours"] is not None]
    summary = {
        "bench": "moe_layer",
        "ratio": min(fastest) if fastest else None,
        "baseline": "transformers 5.x MixtralSparseMoeBlock, fastest experts implementation per round "
        "(same weights/tokens, top-2); ratio = its time / our time, worst over token counts",
        "tokens": args.tokens,
        "hidden": args.hidden,
        "intermediate": args.intermediate,
        "experts": args.experts,
        "top_k": 2,
        "top_p": args.top_p,
        "threads": args.threads,
        "timing": "process CPU time" if args.cpu_time and args.device == "cpu" else "wall clock",
        "dispatch": args.dispatch,
        "cpu_linear": args.cpu_linear,
        "onednn": mode_min_macs(args.cpu_linear) is not None,
        "fastest_hf_over_ours": {
            r["tokens"]: round(r["fastest_hf_over_ours"], 3) for r in results if fastest
        },
        "hf_over_ours": {
            r["tokens"]: {k: round(v, 3) for k, v in r["hf_over_ours"].items()} for r in results
        },
        "other_dispatch_time_over_default": {
            r["tokens"]: {k: round(v, 3) for k, v in r["dispatch_over_default"].items()} for r in results
        },
        "ours_over_dense_top2": {r["tokens"]: round(r["ours_over_dense"], 3) for r in results},
        "topp_over_dense_equiv": {r["tokens"]: round(r["topp_over_dense_equiv"], 3) for r in results},
        "avg_experts_top_p": {r["tokens"]: round(r["avg_experts_top_p"], 3) for r in results},
        "skipped": skipped,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
