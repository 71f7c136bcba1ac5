"""RL records for the RLMEC data and module tests, built from bundled problems with the shipped tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from algorithms.alignment import imitation_weights
from algorithms.edit_steps import gold_solution
from algorithms.token_rewards import grm_token_rewards
from reasoning.questions import load_reasoning_records

ROOT = Path(__file__).resolve().parents[1]


def rl_records(tokenizer: Any, n: int = 6) -> list[dict[str, Any]]:
    """``n`` records: even ones correct (rewrite = original), odd ones wrong (a corrupted result,
    rewritten to the gold); rewards from a fixed probability pattern; ref_logps 0 (tests fill them)."""
    records = load_reasoning_records(ROOT / "data" / "reasoning" / "train.jsonl", limit=n)
    out = []
    for i, rec in enumerate(records):
        prompt_text = tokenizer.apply_chat_template(
            [{"role": "user", "content": rec.question}], add_generation_prompt=True, tokenize=False
        )
        prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        gold = gold_solution(rec)
        correct = i % 2 == 0
        text = gold if correct else gold.replace(f"#### {rec.gold}", f"#### {int(rec.gold) + 1}")
        eos = [tokenizer.eos_token_id]
        response = tokenizer(text, add_special_tokens=False)["input_ids"] + eos
        rewrite = tokenizer(gold, add_special_tokens=False)["input_ids"] + eos
        probs = torch.tensor([((7 * i + 13 * t) % 100) / 99 for t in range(len(response))])
        out.append(
            {
                "id": rec.id,
                "problem_id": rec.id,
                "prompt_ids": prompt,
                "response_ids": response,
                "rewards": grm_token_rewards(probs, correct).tolist(),
                "ref_logps": [0.0] * len(response),
                "rewrite_ids": rewrite,
                "weights": imitation_weights(response, rewrite, correct=correct),
                "correct": correct,
            }
        )
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
