"""Benchmark: decoding throughput, two workloads (``--workload sampling`` is the default).

**sampling**: m reasoning paths per question, ours vs plain ``transformers`` generate.

Variants (same prompts, same sampling settings: temperature 0.7, top_p 0.95, no top-k, and exactly
``--new-tokens`` tokens per sequence for all, since the models have no EOS):

- ``ours``: :func:`inference.decoding.generate_token_ids` (shared-prefix KV cache: each prompt is
  prefilled once, then its cache is expanded to the m samples; value-sort nucleus + inverse-CDF
  sampling);
- ``batched``: one ``model.generate(..., num_return_sequences=m, do_sample=True)`` call (baseline);
- ``loop``: ``model.generate`` for one sequence at a time (m calls per question); to keep the run short
  it is timed on the first ``--loop-questions`` questions and compared in tokens/s.

Two models: a tiny Llama (hidden 64, 2 layers) and a ~6M-parameter Llama (hidden 256, 8 layers), both
with a 1024-token vocabulary like the repo tokenizer. Variants are interleaved in rounds (order
rotated each round) and the medians of the per-round ratios are reported. The LAST line is JSON;
``"ratio"`` = ours / batched tokens/s, the worst case over the two models.

Run: ``python bench/generation.py`` (about 2 minutes on 2 cores).

**greedy** (``--workload greedy``): the real model of the test tier (SmolLM2-135M-Instruct, fp32, prepared
by ``make real-model``), 16 chat prompts (the user turns of ``data/realmodel/dialogues.jsonl``, chat
template applied), exactly 128 new tokens each (EOS ignored), one batch of 16. Variants, interleaved in
rounds with the order rotated (``--greedy-variants`` picks a subset; vLLM runs whenever it can):

- ``prepacked``: ``generate_token_ids(decode="prepacked")``: the eager loop with every linear layer on
  a oneDNN-packed weight (:mod:`inference.prepacked`; packing happens in the warm-up call);
- ``compiled``: ``generate_token_ids(decode="compiled")``: static KV cache and a ``torch.compile``-d
  decode step (its one-time compile is done in a warm-up call, outside the timing);
- ``eager``: today's decoder (``decode="eager"``, dynamic preallocated cache) on plain ``nn.Linear``
  layers (MKL);
- ``eager_onednn``: the same decoder on the layers Quartet's model factory builds by default
  (``model.cpu_linear=auto``, :mod:`models.cpu_linear`: oneDNN on the plain weights);
- ``hf_generate``: ``model.generate(do_sample=False)`` on the same left-padded batch;
- ``vllm``: vLLM's offline engine (fp32, ``enforce_eager``) in ``.venv-vllm`` through
  ``scripts/vllm_greedy_worker.py``, timed inside that process; only where ``.venv-vllm`` exists.

The token ids of ``prepacked`` and ``compiled`` must equal ``eager``'s (checked; the run fails
otherwise), and the agreement with ``hf_generate`` and vLLM is reported. The JSON ``ratio`` is
prepacked / vLLM tokens/s where vLLM ran, else prepacked / eager (the ``baseline`` field names which);
``ratios`` holds prepacked against every other variant run (wall clock), ``ratios_cpu_time`` the same
in CPU seconds of the process doing the work (for vLLM, its worker and the worker's child processes),
which a shared machine disturbs less than the wall clock.

What separates the HF backend from vLLM on CPU is written up in docs/decoding_speed.md (measured:
compiled 0.77x eager, eager about 0.41x vLLM, prepacked about 2x eager; SmolLM2 fp32 on a loaded
2-core machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from inference.decoding import generate_token_ids
from inference.sampling import SamplingParams

ROOT = Path(__file__).resolve().parents[1]
GREEDY_VARIANTS = ("prepacked", "compiled", "eager", "eager_onednn", "hf_generate")

MODELS = {
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 128,
    },
    "6M": {
        "hidden_size": 256,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "intermediate_size": 704,
    },
}


def build_model(name: str, vocab: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        max_position_embeddings=512,
        eos_token_id=None,
        bos_token_id=None,
        pad_token_id=0,
        **MODELS[name],
    )
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def make_prompts(n: int, lo: int, hi: int, vocab: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    return [torch.randint(1, vocab, (length,), generator=g).tolist() for length in lengths]


def left_pad(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return ids, mask


def variants(model, prompts, m: int, new_tokens: int, loop_questions: int) -> dict[str, Callable[[], int]]:
    """Each callable generates and returns the number of new tokens it produced."""
    kw = {
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.95,
        "top_k": 0,
        "max_new_tokens": new_tokens,
        "pad_token_id": 0,
    }
    ids, mask = left_pad(prompts)
    params = SamplingParams(
        n=m, temperature=0.7, top_p=0.95, max_new_tokens=new_tokens, seed=0, ignore_eos=True
    )

    @torch.inference_mode()
    def ours() -> int:
        out = generate_token_ids(model, prompts, params, eos_token_ids=[], pad_token_id=0)
        return sum(s.num_tokens for g in out for s in g)

    @torch.inference_mode()
    def batched() -> int:
        out = model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=m, **kw)
        return (out.shape[1] - ids.shape[1]) * out.shape[0]

    @torch.inference_mode()
    def loop() -> int:
        total = 0
        for p in prompts[:loop_questions]:
            x = torch.tensor([p])
            for _ in range(m):
                out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), **kw)
                total += out.shape[1] - x.shape[1]
        return total

    return {"ours": ours, "batched": batched, "loop": loop}


@torch.inference_mode()
def greedy_check(model, prompts) -> bool:
    """Our greedy output equals plain generate's on the same left-padded batch."""
    ids, mask = left_pad(prompts)
    ref = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=16, pad_token_id=0
    )
    ours = generate_token_ids(
        model, prompts, SamplingParams(max_new_tokens=16), eos_token_ids=[], pad_token_id=0
    )
    return ref[:, ids.shape[1] :].tolist() == [g[0].token_ids for g in ours]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Decoding throughput: sampling paths, or greedy on the real model"
    )
    ap.add_argument("--workload", choices=("sampling", "greedy"), default="sampling")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is stable on shared 2-core boxes)"
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--loop-rounds", type=int, default=3, help="rounds that also time the slow one-at-a-time loop"
    )
    ap.add_argument("--loop-questions", type=int, default=2, help="questions the loop variant generates for")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--m", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--prompt-min", type=int, default=60)
    ap.add_argument("--prompt-max", type=int, default=100)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--models", default="tiny,6M")
    ap.add_argument("--greedy-prompts", type=int, default=16)
    ap.add_argument("--greedy-new-tokens", type=int, default=128)
    ap.add_argument(
        "--greedy-variants",
        default=",".join(GREEDY_VARIANTS),
        help="comma-separated subset of our greedy variants to time (prepacked and eager always run)",
    )
    ap.add_argument(
        "--vllm-python",
        default=str(ROOT / ".venv-vllm" / "bin" / "python")
        if (ROOT / ".venv-vllm" / ".installed").exists()
        else "",
        help="python of a venv with vllm (default: .venv-vllm's, once `make venv-vllm` has finished)",
    )
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.workload == "greedy":
        greedy_main(args)
    else:
        sampling_main(args)


def sampling_main(args: argparse.Namespace) -> None:
    prompts = make_prompts(args.questions, args.prompt_min, args.prompt_max, args.vocab)
    tokens = args.questions * args.m * args.new_tokens
    summary: dict[str, dict] = {}
    rows = []
    for name in args.models.split(","):
        model = build_model(name, args.vocab)
        n_params = sum(p.numel() for p in model.parameters())
        fns = variants(model, prompts, args.m, args.new_tokens, args.loop_questions)
        expected = {
            "ours": tokens,
            "batched": tokens,
            "loop": min(args.loop_questions, args.questions) * args.m * args.new_tokens,
        }
        for v in ("ours", "batched"):  # warm-up, and check every variant makes the same number of tokens
            assert fns[v]() == tokens
        ok = greedy_check(model, prompts)
        times: dict[str, list[float]] = {k: [] for k in fns}
        ratios_b, ratios_l = [], []
        for r in range(args.rounds):
            names = ["ours", "batched"] + (["loop"] if r < args.loop_rounds else [])
            names = names[r % len(names) :] + names[: r % len(names)]  # rotate the order
            t: dict[str, float] = {}
            for v in names:
                start = time.perf_counter()
                produced = fns[v]()
                t[v] = time.perf_counter() - start
                assert produced == expected[v], (v, produced, expected[v])
                times[v].append(t[v] / expected[v])  # seconds per generated token
            ratios_b.append(times["batched"][-1] / times["ours"][-1])
            if "loop" in t:
                ratios_l.append(times["loop"][-1] / times["ours"][-1])
        med = {k: statistics.median(v) for k, v in times.items()}  # seconds per token
        summary[name] = {
            "params": n_params,
            "ratio_vs_batched": statistics.median(ratios_b),
            "ratio_vs_loop": statistics.median(ratios_l),
            # Fastest round of each variant: the least disturbed by other processes on a shared box.
            "ratio_vs_batched_best": min(times["batched"]) / min(times["ours"]),
            "tokens_per_s": {k: 1.0 / v for k, v in med.items()},
            "greedy_matches_generate": ok,
        }
        for v in ("ours", "batched", "loop"):
            rows.append(
                (
                    name,
                    f"{n_params / 1e6:.2f}M",
                    v,
                    f"{med[v] * expected[v]:.3f}",
                    f"{1.0 / med[v]:,.0f}",
                    f"{summary[name]['ratio_vs_batched']:.2f}x" if v == "ours" else "",
                    f"{summary[name]['ratio_vs_loop']:.2f}x" if v == "ours" else "",
                )
            )

    header = ("model", "params", "variant", "median s", "tokens/s", "ours/batched", "ours/loop")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(
        f"m={args.m} paths x {args.questions} questions, {args.new_tokens} new tokens each, prompts "
        f"{args.prompt_min}-{args.prompt_max} tokens, vocab {args.vocab}, threads={args.threads}, "
        f"rounds={args.rounds} (loop: {args.loop_questions} questions, timed in {args.loop_rounds} rounds)"
    )
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    for name, s in summary.items():
        print(f"{name}: greedy output identical to model.generate: {s['greedy_matches_generate']}")
    worst = min(summary, key=lambda k: summary[k]["ratio_vs_batched"])
    result = {
        "ratio": round(summary[worst]["ratio_vs_batched"], 3),
        "ratio_model": worst,
        "baseline": "one transformers model.generate(num_return_sequences=m, do_sample=True) call (tokens/s)",
        "ratios_vs_batched": {k: round(v["ratio_vs_batched"], 3) for k, v in summary.items()},
        "ratios_vs_loop": {k: round(v["ratio_vs_loop"], 3) for k, v in summary.items()},
        "ratios_vs_batched_best_round": {k: round(v["ratio_vs_batched_best"], 3) for k, v in summary.items()},
        "tokens_per_s": {k: {v: round(x) for v, x in s["tokens_per_s"].items()} for k, s in summary.items()},
        "params": {k: v["params"] for k, v in summary.items()},
        "m": args.m,
        "questions": args.questions,
        "new_tokens": args.new_tokens,
        "prompt_tokens": [args.prompt_min, args.prompt_max],
        "vocab": args.vocab,
        "threads": args.threads,
        "rounds": args.rounds,
        "loop_questions": args.loop_questions,
    }
    print(json.dumps(result))


# ---- the greedy workload -----------------------------------------------------------------------------
def greedy_prompts(tokenizer, count: int) -> list[list[int]]:
    """Token ids of ``count`` chat prompts: the user turns of the real-model dialogues, in file order."""
    from inference.chat import encode_prompt

    turns = []
    for line in (ROOT / "data" / "realmodel" / "dialogues.jsonl").read_text().splitlines():
        turns += [m["content"] for m in json.loads(line)["messages"] if m["role"] == "user"]
    if len(turns) < count:
        raise SystemExit(
            f"error: only {len(turns)} user turns in data/realmodel/dialogues.jsonl, need {count}"
        )
    return [encode_prompt(tokenizer, [{"role": "user", "content": t}]) for t in turns[:count]]


class VLLMWorker:
    """scripts/vllm_greedy_worker.py in .venv-vllm, driven over pipes (one engine for every round)."""

    def __init__(self, python: str, model: Path, prompts: list[list[int]], new_tokens: int, work: Path):
        import subprocess

        request = {
            "model": str(model),
            "prompt_ids": prompts,
            "new_tokens": new_tokens,
            "engine": {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048, "seed": 0},
        }
        (work / "request.json").write_text(json.dumps(request))
        cmd = [python, str(ROOT / "scripts" / "vllm_greedy_worker.py"), str(work / "request.json")]
        # Like tests_vllm: a 1 GiB KV cache, offline; one OpenMP thread bound to core 0 (as ours: 1 thread).
        env = {k: v for k, v in __import__("os").environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env.update(
            VLLM_CPU_KVCACHE_SPACE="1",
            HF_HUB_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            VLLM_CPU_OMP_THREADS_BIND="0",
            OMP_NUM_THREADS="1",
        )
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        while (line := self.proc.stdout.readline()) and line.strip() != "ready":
            pass
        if not line:
            raise RuntimeError("the vLLM worker exited before it was ready")

    def run(self) -> tuple[float, list[list[int]]]:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        line = ""
        while not line.startswith('{"seconds"'):  # vLLM logs to stdout too
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the vLLM worker exited during a run")
        reply = json.loads(line)
        return reply["seconds"], reply["token_ids"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def greedy_variants(model, prompts: list[list[int]], new_tokens: int, pad: int) -> dict[str, Callable]:
    """Each callable decodes the batch greedily and returns (seconds, token ids per prompt)."""
    params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
    ids, mask = left_pad(prompts)

    def ours(decode: str) -> Callable:
        @torch.inference_mode()
        def run() -> tuple[float, list[list[int]]]:
            start = time.perf_counter()
            out = generate_token_ids(
                model, prompts, params, eos_token_ids=[], pad_token_id=pad, decode=decode
            )
            return time.perf_counter() - start, [g[0].token_ids for g in out]

        return run

    @torch.inference_mode()
    def hf_generate() -> tuple[float, list[list[int]]]:
        start = time.perf_counter()
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=pad,
        )
        return time.perf_counter() - start, out[:, ids.shape[1] :].tolist()

    def eager_onednn() -> tuple[float, list[list[int]]]:
        """The eager decoder on the layers Quartet's model factory makes by default (``model.cpu_linear=auto``:
        on the CPUs where it pays, products of at least ``MIN_MACS`` on oneDNN, the plain weight, no packed
        copy; elsewhere the plain layers, i.e. ``eager``)."""
        from models.cpu_linear import use_onednn_linears

        moved = [m for m in model.modules() if type(m) is torch.nn.Linear]
        use_onednn_linears(model, "auto")
        try:
            return ours("eager")()
        finally:
            for m in moved:
                m.__class__ = torch.nn.Linear
                m.__dict__.pop("onednn_min_macs", None)

    return {
        "prepacked": ours("prepacked"),
        "compiled": ours("compiled"),
        "eager": ours("eager"),
        "eager_onednn": eager_onednn,
        "hf_generate": hf_generate,
    }


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its live descendants (Linux /proc;
    0.0 elsewhere). vLLM runs its engine in a child process of the worker."""
    import os

    total, stack, tick = 0, [pid], os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    while stack:
        proc = Path(f"/proc/{stack.pop()}")
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
            for task in (proc / "task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def greedy_rounds(
    fns: dict[str, Callable], rounds: int, cpu_of: dict[str, Callable[[], float]]
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list]]:
    """Interleaved rounds (order rotated each round): wall seconds and CPU seconds per variant per round
    (``cpu_of[v]`` reads the CPU clock of the process that does v's work), and the last ids."""
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    ids: dict[str, list] = {}
    for r in range(rounds):
        for v in names[r % len(names) :] + names[: r % len(names)]:
            start = cpu_of[v]()
            seconds, ids[v] = fns[v]()
            cpu[v].append(cpu_of[v]() - start)
            times[v].append(seconds)
    return times, cpu, ids


def greedy_main(args: argparse.Namespace) -> None:
    import importlib.util
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "prepare_real_model", root / "scripts" / "prepare_real_model.py"
    )
    prepare_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare_module)
    folder = prepare_module.prepare()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prompts = greedy_prompts(tok, args.greedy_prompts)
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
    chosen = {"prepacked", "eager", *args.greedy_variants.split(",")}
    unknown = chosen - set(GREEDY_VARIANTS)
    if unknown:
        raise SystemExit(
            f"error: --greedy-variants: unknown {sorted(unknown)}; choose from {GREEDY_VARIANTS}"
        )
    fns = {
        k: f for k, f in greedy_variants(model, prompts, args.greedy_new_tokens, pad).items() if k in chosen
    }
    compile_s = fns["compiled"]()[0] if "compiled" in fns else 0.0  # warm-up: the one-time compile
    for v in fns:
        if v != "compiled":
            fns[v]()  # warm-up (prepacked: packs the weights once)
    worker = None
    with tempfile.TemporaryDirectory() as work:
        if args.vllm_python:
            worker = VLLMWorker(args.vllm_python, folder, prompts, args.greedy_new_tokens, Path(work))
            worker.run()
            fns["vllm"] = worker.run
        cpu_of = {v: time.process_time for v in fns}
        if worker is not None:
            cpu_of["vllm"] = lambda: tree_cpu_seconds(worker.proc.pid)
        times, cpu, ids = greedy_rounds(fns, args.rounds, cpu_of)
        if worker is not None:
            worker.close()
    greedy_report(args, times, cpu, ids, compile_s)


def greedy_report(
    args: argparse.Namespace,
    times: dict[str, list[float]],
    cpu: dict[str, list[float]],
    ids: dict,
    compile_s: float,
) -> None:
    tokens = args.greedy_prompts * args.greedy_new_tokens
    for v in ("prepacked", "compiled"):
        if v in ids and ids[v] != ids["eager"]:
            raise SystemExit(f"error: {v} greedy tokens differ from the eager decoder's")
    ratios = {
        b: statistics.median(tb / tc for tb, tc in zip(times[b], times["prepacked"]))
        for b in times
        if b != "prepacked"
    }
    print(
        f"greedy: {args.greedy_prompts} prompts x {args.greedy_new_tokens} new tokens, SmolLM2-135M fp32, "
        f"threads={args.threads}, rounds={args.rounds}, first compile {compile_s:.1f} s (not timed)"
    )
    # CPU seconds per run: on a shared machine the wall clock also counts the time a variant waited for
    # the core; the CPU clock of the process doing the work does not.
    cpu_ratios = {
        b: statistics.median(cb / cc for cb, cc in zip(cpu[b], cpu["prepacked"]))
        for b in cpu
        if b != "prepacked" and min(cpu["prepacked"]) > 0
    }
    print(
        f"{'variant':<12} {'median s':>9} {'tokens/s':>9} {'prepacked/this':>15} {'CPU s':>7} "
        f"{'CPU/wall':>9} {'prepacked/this (CPU)':>21} {'same ids as eager':>18}"
    )
    for v, ts in times.items():
        med, med_cpu = statistics.median(ts), statistics.median(cpu[v])
        rel = f"{ratios[v]:.2f}x" if v in ratios else ""
        rel_cpu = f"{cpu_ratios[v]:.2f}x" if v in cpu_ratios else ""
        same = sum(a == b for a, b in zip(ids[v], ids["eager"]))
        print(
            f"{v:<12} {med:>9.2f} {tokens / med:>9.0f} {rel:>15} {med_cpu:>7.2f} {med_cpu / med:>9.2f} "
            f"{rel_cpu:>21} {same:>15}/{len(ids['eager'])}"
        )
    base = "vllm" if "vllm" in ratios else "eager"
    result = {
        "ratio": round(ratios[base], 3),
        "baseline": {
            "vllm": "vLLM 0.32 CPU offline engine, fp32, enforce_eager, same prompt ids (tokens/s)",
            "eager": "the eager decoder, generate_token_ids(decode='eager') (tokens/s); no .venv-vllm here",
        }[base],
        "variant": "prepacked",
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "ratios_vs_vllm": {
            k: round(statistics.median(tv / tk for tv, tk in zip(times["vllm"], t)), 3)
            for k, t in times.items()
            if k != "vllm"
        }
        if "vllm" in times
        else {},
        "tokens_per_s": {k: round(tokens / statistics.median(v)) for k, v in times.items()},
        "ratios_cpu_time": {k: round(v, 3) for k, v in cpu_ratios.items()},
        "cpu_seconds": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
        "identical_ids_vs_eager": {k: sum(a == b for a, b in zip(v, ids["eager"])) for k, v in ids.items()},
        "prompts": args.greedy_prompts,
        "new_tokens": args.greedy_new_tokens,
        "threads": args.threads,
        "rounds": args.rounds,
        "compile_s": round(compile_s, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
