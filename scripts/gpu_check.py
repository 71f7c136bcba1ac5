"""Every GPU measurement in one short run (issue #19): ``scripts/gpu_check.sh`` on a GPU machine.

For each module (SFT, CaPO, RLMEC, Top-P MoE, and online RL where its config exists) and for packing
off and on (where the data modules offer ``data.packing``), it runs a few training steps of ``train.py``
with ``trainer=gpu`` in bf16-mixed on the real model of the test tier (SmolLM2-135M-Instruct, ``make
real-model``), and records tokens/s, peak memory and an MFU estimate (``callbacks/throughput.py``).
It reports the environment (torch and CUDA versions, bf16 support, which attention kernels are
available), then runs ``bench/sft_vs_trl.py`` and ``bench/moe_layer.py`` with ``--device cuda``.
It writes one JSON file and prints one table.

``--cpu`` runs the same matrix on the CPU at tiny sizes (a tiny Llama saved as an HF folder), which the
test suite does so that the script cannot rot. Each run is its own ``train.py`` process, so one failure
is recorded (its last error line) and the others still run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DIALOGUES = ROOT / "data" / "realmodel" / "dialogues.jsonl"
PAIRS = ROOT / "data" / "capo" / "pairs.jsonl"


def environment() -> dict[str, Any]:
    """torch/CUDA versions, the device, bf16 support and the attention kernels this build offers."""
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "sdpa_flash": bool(cuda and torch.backends.cuda.flash_sdp_enabled()),
        "sdpa_mem_efficient": bool(cuda and torch.backends.cuda.mem_efficient_sdp_enabled()),
        "sdpa_cudnn": bool(cuda and torch.backends.cuda.cudnn_sdp_enabled()),
        "flex_attention": importlib.util.find_spec("torch.nn.attention.flex_attention") is not None,
    }
    for package in ("flash_attn", "liger_kernel", "cut_cross_entropy"):
        env[f"{package}_installed"] = importlib.util.find_spec(package) is not None
    return env


def load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_hf_folder(out: Path) -> Path:
    """A tiny random Llama with the shipped tokenizer, saved as an HF folder (the ``--cpu`` model)."""
    from models import build_model, load_tokenizer

    if (out / "config.json").is_file():
        return out
    tokenizer = load_tokenizer(str(ROOT / "assets" / "tokenizer"), False, None)
    cfg = {"kind": "tiny", "hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4}
    build_model(cfg, tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def rlmec_records(model_dir: Path, out: Path, limit: int = 16) -> Path:
    """RLMEC token records made from the bundled dialogues in ``model_dir``'s tokenizer: the last reply
    first user turn is the prompt, the first reply the sample and its own rewrite, with fixed token rewards (a throughput check, not a training run)."""
    from algorithms.rlmec_records import RLMECTokenRecord
    from models import load_tokenizer
    from stages.rlmec.token_scoring import encode_sample

    tokenizer = load_tokenizer(str(model_dir), False, None)
    rows = []
    for i, line in enumerate(DIALOGUES.read_text(encoding="utf-8").splitlines()[:limit]):
        messages = json.loads(line)["messages"]
        prompt_ids, response_ids = encode_sample(tokenizer, messages[:1], messages[1]["content"])
        n = len(response_ids)
        record = RLMECTokenRecord(
            id=f"d{i}", problem_id=f"d{i}", correct=i % 2 == 0, prompt_ids=prompt_ids,
            response_ids=response_ids, rewards=[0.1 if i % 2 == 0 else -0.05] * n, ref_logps=[-1.0] * n,
            rewrite_ids=response_ids, weights=[1.0] * n,
        )  # fmt: skip
        rows.append(json.dumps(record.to_json()))
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def module_matrix(model_dir: Path, work: Path) -> dict[str, list[str]]:
    """Overrides per module; online RL joins when its config exists."""
    matrix = {
        "sft": ["module=sft", "data=chat", f"data.path={DIALOGUES}"],
        "capo": ["module=capo", "data=preference", f"data.path={PAIRS}", "module.reference=copy", "data.on_bad_record=skip"],
        "rlmec": ["module=rlmec", "data=rlmec", f"data.path={rlmec_records(model_dir, work / 'rl.jsonl')}"],
        "topp_moe": [
            "model=moe_upcycle", "model.num_experts=4", "module=topp_moe", "module.log_histograms=false",
            "data=chat", f"data.path={DIALOGUES}",
        ],
    }  # fmt: skip
    if (ROOT / "conf" / "experiment" / "grpo_tiny.yaml").is_file():
        matrix["online_rl"] = ["experiment=grpo_tiny", "model=hf"]
    return matrix


#: modules whose data modules offer ``data.packing`` (docs/packing.md); Top-P MoE trains on the chat
#: rows here through the Quartet MoE attention, which reads no row boundaries, and online RL packs nothing
PACKABLE = ("sft", "capo", "rlmec")


def packing_modes(module: str) -> list[bool]:
    """Packing off, and on where the module's data module offers it."""
    chat = (ROOT / "conf" / "data" / "chat.yaml").read_text(encoding="utf-8")
    return [False, True] if module in PACKABLE and "packing:" in chat else [False]


def run_one(name: str, overrides: list[str], common: list[str], out: Path, timeout: int) -> dict[str, Any]:
    """One ``train.py`` run; its ``throughput.json``, or the error it ended on."""
    probe = out / "throughput.json"
    cmd = [sys.executable, str(ROOT / "train.py"), *common, *overrides, f"hydra.run.dir={out}"]
    cmd += [
        "+callbacks.throughput._target_=callbacks.throughput.ThroughputProbe",
        f"+callbacks.throughput.out={probe}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    record: dict[str, Any] = {"name": name, "wall_s": round(time.perf_counter() - start, 1)}
    if proc.returncode == 0 and probe.is_file():
        return {**record, "status": "ok", **json.loads(probe.read_text(encoding="utf-8"))}
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return {**record, "status": f"failed (exit {proc.returncode})", "error": lines[-1] if lines else ""}


def common_overrides(model_dir: Path, cpu: bool, steps: int, max_length: int, batch_size: int) -> list[str]:
    trainer = (
        ["trainer=cpu", "trainer.precision=32-true"]
        if cpu
        else ["trainer=gpu", "trainer.precision=bf16-mixed"]
    )
    return [
        "model=hf", f"model.pretrained={model_dir}", "model.dtype=float32", *trainer,
        "callbacks=none", "logger=none", "export=false", "print_config=false", "+trainer.enable_checkpointing=false",
        f"trainer.max_steps={steps}", "trainer.max_epochs=1000", "trainer.limit_val_batches=0",
        "data.val_fraction=0", f"data.batch_size={batch_size}", f"data.max_length={max_length}",
        "module.scheduler.warmup_ratio=0", "trainer.enable_progress_bar=false",
    ]  # fmt: skip


def run_bench(script: str, args: list[str], timeout: int) -> dict[str, Any]:
    """A bench's last-line JSON, or why it has none."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"failed (exit {proc.returncode})", "error": tail}


def _fmt(record: dict[str, Any], key: str, spec: str) -> str:
    return "-" if record.get(key) is None else format(record[key], spec)


def table(runs: list[dict[str, Any]]) -> str:
    """The one table: a row per run."""
    head = (
        f"{'run':<22} {'status':<10} {'tokens/s':>10} {'step s':>8} {'peak GiB':>9} {'MFU':>7} {'loss':>15}"
    )
    rows = [head, "-" * len(head)]
    for r in runs:
        loss = f"{_fmt(r, 'loss_first', '.3f')}->{_fmt(r, 'loss_last', '.3f')}"
        status = "ok" if r["status"] == "ok" else "FAILED"
        rows.append(
            f"{r['name']:<22} {status:<10} {_fmt(r, 'tokens_per_s', '.0f'):>10} {_fmt(r, 'step_time_s', '.3f'):>8} "
            f"{_fmt(r, 'peak_memory_gib', '.2f'):>9} {_fmt(r, 'mfu', '.3f'):>7} {loss:>15}"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (what the test suite runs)")
    p.add_argument(
        "--out", default=str(ROOT / "outputs" / "gpu_check"), help="folder for runs and gpu_check.json"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="training steps per run (default 12 on GPU, 2 on CPU)"
    )
    p.add_argument(
        "--modules", default="", help="comma-separated subset of sft,capo,rlmec,topp_moe,online_rl"
    )
    p.add_argument("--no-bench", action="store_true", help="skip bench/sft_vs_trl.py and bench/moe_layer.py")
    p.add_argument("--timeout", type=int, default=240, help="seconds per run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_dir = tiny_hf_folder(out / "tiny_hf") if args.cpu else load_script("prepare_real_model").prepare()
    steps = args.steps or (2 if args.cpu else 12)
    common = common_overrides(model_dir, args.cpu, steps, 256 if args.cpu else 1024, 2 if args.cpu else 8)
    matrix = module_matrix(model_dir, out)
    wanted = [m for m in args.modules.split(",") if m] or list(matrix)
    runs = []
    for name in wanted:
        for packing in packing_modes(name):
            label = f"{name}{'+packing' if packing else ''}"
            extra = ["data.packing=true"] if packing else []
            runs.append(
                {
                    **run_one(label, [*matrix[name], *extra], common, out / label, args.timeout),
                    "packing": packing,
                }
            )
            print(f"{label}: {runs[-1]['status']}", flush=True)
    benches = {}
    if not args.no_bench:
        device = ["--device", "cpu" if args.cpu else "cuda"]
        benches["sft_vs_trl"] = run_bench("sft_vs_trl.py", ["--steps", "6", "--rounds", "1", *device], 300)
        benches["moe_layer"] = run_bench("moe_layer.py", ["--tokens", "512", "2048", "8192", *device], 300)
    report = {
        "environment": environment(),
        "mode": "cpu" if args.cpu else "gpu",
        "steps": steps,
        "runs": runs,
        "benches": benches,
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report["environment"]))
    print(table(runs))
    for name, result in benches.items():
        print(f"{name}: {json.dumps(result)}")
    return report


if __name__ == "__main__":
    report = main()
    sys.exit(0 if all(r["status"] == "ok" for r in report["runs"]) else 1)
