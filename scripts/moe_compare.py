"""Compare finished MoE / dense run folders: validation loss and activated experts per token.

    python scripts/moe_compare.py outputs/moe_tiny_topp/runs/<t> outputs/moe_tiny_top2/runs/<t> ...

Reads each folder's ``summary.json``, ``csv/metrics.csv`` and (MoE runs) ``moe_experts_heatmap.json``,
and prints a Markdown table: final val loss / perplexity, val experts per token (mean over layers, and
per layer), its trend over the validations, the activated expert FFN parameters against Top-2, the
activated parameters per token of the whole decoder, steps and wall time. The last line is the same
table as one JSON object.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def _float(v: str | None) -> float | None:
    return float(v) if v not in (None, "") else None


def read_run(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    val = [r for r in rows if r.get("val/loss")]
    out: dict = {
        "run": run.name if run.name not in ("", ".") else str(run),
        "task": summary.get("run_name"),
        "steps": summary.get("global_step"),
        "wall_time_s": summary.get("wall_time_s"),
        "val_loss": _float(val[-1]["val/loss"]) if val else None,
        "val_ppl": _float(val[-1].get("val/ppl")) if val else None,
        "val_loss_curve": [(int(r["step"]) + 1, round(float(r["val/loss"]), 4)) for r in val],
    }
    k_curve = [
        (int(r["step"]) + 1, round(float(r["val/moe/experts_per_token"]), 3))
        for r in val
        if r.get("val/moe/experts_per_token")
    ]
    out["val_experts_per_token_curve"] = k_curve
    out["val_experts_per_token"] = k_curve[-1][1] if k_curve else None
    if val and k_curve:
        last = val[-1]
        layers = sorted(
            int(k.split("/")[2][5:])
            for k in last
            if k.startswith("val/moe/layer") and k.endswith("/experts_per_token") and last[k]
        )
        out["val_experts_per_token_by_layer"] = [
            round(float(last[f"val/moe/layer{i}/experts_per_token"]), 3) for i in layers
        ]
    heat = run / "moe_experts_heatmap.json"
    if heat.is_file():
        data = json.loads(heat.read_text())
        cols = list(zip(*data["experts_per_token"]))
        mean = [sum(c) / len(c) for c in cols]
        w = max(1, len(mean) // 10)
        out["train_experts_per_token_first"] = round(sum(mean[:w]) / w, 3)
        out["train_experts_per_token_last"] = round(sum(mean[-w:]) / w, 3)
        out["train_experts_per_token_max"] = round(max(mean), 3)
    out.update(activated_params(run, out.get("val_experts_per_token")))
    return out


def activated_params(run: Path, experts_per_token: float | None) -> dict:
    """Decoder parameters used per token (embeddings excluded), from the run's saved model config."""
    cfg_file = run / "hf_model" / "config.json"
    if not cfg_file.is_file():
        return {}
    c = json.loads(cfg_file.read_text())
    h, layers = c["hidden_size"], c["num_hidden_layers"]
    heads, kv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    head_dim = c.get("head_dim") or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2 + 2 * h
    if c.get("model_type") != "quartet_topp_moe":
        return {
            "routing": f"dense MLP {c['intermediate_size']}",
            "activated_params_per_token": layers * (attn + 3 * h * c["intermediate_size"]),
        }
    rule = f"top-p {c['router_top_p']}" if c["router_type"] == "top_p" else f"top-{c['router_top_k']}"
    norm = ", renorm" if c.get("router_renormalize") else ""
    e_int, n_exp = c["moe_intermediate_size"], c["num_experts"]
    every = c.get("moe_every_k", 1)
    moe_layers = len([i for i in range(layers) if i % every == 0])
    dense_layers = layers - moe_layers
    k = experts_per_token or 0.0
    expert = 3 * h * e_int
    per_moe = attn + h * n_exp + k * expert
    return {
        "routing": f"{rule}{norm}, {c['num_experts']}×{c['moe_intermediate_size']}",
        "activated_params_per_token": round(
            moe_layers * per_moe + dense_layers * (attn + 3 * h * c["intermediate_size"])
        ),
        "activated_expert_ratio_vs_top2": round(k / 2, 3),
    }


def main(argv: list[str]) -> None:
    runs = [read_run(Path(a)) for a in argv]
    head = "| run | routing | steps | wall s | val loss | val ppl | experts/token (val, final) | by layer | train experts/token first → last | activated params/token |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in runs:
        trend = (
            f"{r['train_experts_per_token_first']} → {r['train_experts_per_token_last']}"
            if "train_experts_per_token_first" in r
            else "–"
        )
        print(
            f"| {r['task']} | {r.get('routing', '?')} | {r['steps']} | {r['wall_time_s']:.0f} | {r['val_loss']:.4f} | {r['val_ppl']:.3f} | "
            f"{r['val_experts_per_token'] if r['val_experts_per_token'] is not None else '–'} | "
            f"{r.get('val_experts_per_token_by_layer', '–')} | {trend} | {r.get('activated_params_per_token', '–')} |"
        )
    print(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main(sys.argv[1:])
