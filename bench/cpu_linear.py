"""float32 CPU linear layers on oneDNN (``model.cpu_linear``) against ATen's ``F.linear`` (MKL ``sgemm``).

    .venv/bin/python bench/cpu_linear.py [--rows 480] [--rounds 5] [--threads 1] [--sweep]

One forward + backward (input and weight gradients) of ``models.cpu_linear.linear`` with the oneDNN
path forced (``min_macs=0``) against ``torch.nn.functional.linear`` on the same tensors, for the layer
shapes of SmolLM2-135M (q/o 576x576, k/v 192x576, gate/up 1536x576, down 576x1536, LM head 49152x576)
at ``--rows`` rows (batch x tokens). The two run interleaved in rounds; each time is the median over
rounds. Outputs and gradients must agree to 1e-5 of their largest value, or the bench stops. The
``stack`` row weighs the shapes as one decoder block has them (q, k, v, o, gate, up, down) and adds the
head once per 30 blocks, as the model does. The last line is JSON with ``ratio`` = ATen time ÷ oneDNN
time for that stack (> 1: oneDNN is faster).

``--sweep``: the forward alone at 1, 4, 16, 64 and 256 rows per shape (plus two tiny-model shapes),
the measurement behind ``MIN_MACS``, the size below which ``cpu_linear=auto`` keeps MKL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from models.cpu_linear import MIN_MACS, linear, onednn_available

#: (name, out, in, per-block count): SmolLM2-135M's linear layers; the head appears once in 30 blocks.
SHAPES = [
    ("q/o 576x576", 576, 576, 2),
    ("k/v 192x576", 192, 576, 2),
    ("gate/up 1536x576", 1536, 576, 2),
    ("down 576x1536", 576, 1536, 1),
    ("head 49152x576", 49152, 576, 1 / 30),
]


def step(fn, x: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: ANN001
    y = fn(x, w)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    return y.detach(), gx, gw


def timed(fn, *args, repeats: int = 3) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=480)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sweep", action="store_true")
    args = p.parse_args()
    if not onednn_available():
        raise SystemExit("this torch build has no oneDNN (torch.backends.mkldnn)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.sweep:
        sweep()
        return
    ours = lambda x, w: linear(x, w, None, min_macs=0)  # noqa: E731
    aten = torch.nn.functional.linear
    rows = []
    for name, out_f, in_f, count in SHAPES:
        x = torch.randn(args.rows, in_f, requires_grad=True)
        w = (torch.randn(out_f, in_f) / in_f**0.5).requires_grad_()
        g = torch.randn(args.rows, out_f)
        for a, b in zip(step(ours, x, w, g), step(aten, x, w, g)):
            err = ((a - b).abs().max() / b.abs().max()).item()
            if err > 1e-5:
                raise SystemExit(f"{name}: oneDNN differs from ATen by {err:.2e} of the largest value")
        t_ours, t_aten = [], []
        for _ in range(args.rounds):
            t_ours.append(timed(step, ours, x, w, g))
            t_aten.append(timed(step, aten, x, w, g))
        rows.append((name, count, statistics.median(t_aten), statistics.median(t_ours)))
    print(
        f"fp32 linear forward + backward, {args.rows} rows, {args.threads} thread(s); median of {args.rounds}"
    )
    print(f"{'shape':<20}{'ATen ms':>10}{'oneDNN ms':>11}{'ratio':>8}")
    for name, _, a, o in rows:
        print(f"{name:<20}{a * 1e3:>10.2f}{o * 1e3:>11.2f}{a / o:>8.2f}")
    stack_aten = sum(c * a for _, c, a, _ in rows)
    stack_ours = sum(c * o for _, c, _, o in rows)
    print(f"{'stack':<20}{stack_aten * 1e3:>10.2f}{stack_ours * 1e3:>11.2f}{stack_aten / stack_ours:>8.2f}")
    result = {
        "bench": "cpu_linear",
        "ratio": round(stack_aten / stack_ours, 3),
        "baseline": f"torch {torch.__version__} F.linear (ATen addmm, MKL sgemm) on the same tensors",
        "per_shape": {name: round(a / o, 3) for name, _, a, o in rows},
        "rows": args.rows,
        "threads": args.threads,
        "rounds": args.rounds,
    }
    print(json.dumps(result))


def sweep() -> None:
    """Forward only, ATen time ÷ oneDNN time per shape and row count (> 1: oneDNN faster)."""
    shapes = [(n, o, i) for n, o, i, _ in SHAPES] + [("tiny 64x64", 64, 64), ("tiny 256x64", 256, 64)]
    counts = (1, 4, 16, 64, 256)
    print(f"forward, ATen ÷ oneDNN (MIN_MACS = {MIN_MACS:,} multiply-adds)")
    print(f"{'shape':<20}" + "".join(f"{f'M={m}':>9}" for m in counts))
    out = {}
    for name, out_f, in_f in shapes:
        w = torch.randn(out_f, in_f)
        ratios = []
        for m in counts:
            x = torch.randn(m, in_f)
            with torch.no_grad():
                dnn = statistics.median(timed(linear, x, w, None, 0, repeats=20) for _ in range(3))
                mkl = statistics.median(timed(torch.nn.functional.linear, x, w, repeats=20) for _ in range(3))
            ratios.append(round(mkl / dnn, 2))
        out[name] = dict(zip(map(str, counts), ratios))
        print(f"{name:<20}" + "".join(f"{r:>9.2f}" for r in ratios))
    print(
        json.dumps(
            {"bench": "cpu_linear_sweep", "ratio": min(min(r.values()) for r in out.values()), "sweep": out}
        )
    )


if __name__ == "__main__":
    main()
