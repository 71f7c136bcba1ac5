"""Token alignment end to end: the RL data of ``rlmec_rl_data`` (rewards, reference log-probs, imitation
weights) matches the policy's tokens one by one, through the data module's collator, with no
off-by-one from BOS, EOS, the chat template or the padding side. Checked with the shipped tokenizer
(whose template writes a BOS) and with a ChatML-style template without BOS built here."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from algorithms.edit_steps import rewrite_messages
from algorithms.logprobs import IGNORE_INDEX
from algorithms.token_rewards import grm_token_rewards
from datamodules.rlmec_token_data import RLMECCollator, validate_record
from inference.sample_cache import SampleCache
from stages.rlmec.rl_data import build_rl_records
from stages.rlmec.sample_records import BadRecords, problem_from_dict
from stages.rlmec.token_scoring import TeacherForcedScorer, cached_scorer, encode_prompt_ids
from tests.inference_helpers import tiny_llama

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _tiny(tokenizer, seed):
    return tiny_llama(len(tokenizer), seed, hidden=32)


def _chatml(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    tok.padding_side = "left"  # the stage pads its own batches; the tokenizer's side must not matter
    return tok


def _samples():
    problem = problem_from_dict(
        {
            "id": "p1",
            "question": "Leo has 4 marbles and buys 4 packs with 10 marbles in each. How many now?",
            "answer": "The packs hold 4 * 10 = 40 marbles. Then 4 + 40 = 44.\n#### 44",
        },
        "t:1",
        "p1",
    )
    prompt = [{"role": "user", "content": "Solve step by step.\n\nQuestion: " + problem.question}]
    right = "The packs hold 4 * 10 = 40 marbles. Then 4 + 40 = 44. The answer is 44."
    wrong = "The packs hold 4 * 10 = 40 marbles. Then 4 + 41 = 45. The answer is 45."
    rows = [
        {
            "id": "p1#0",
            "problem_id": "p1",
            "prompt": prompt,
            "response": right,
            "correct": True,
            "rewrite": right,
        },
        {
            "id": "p1#1",
            "problem_id": "p1",
            "prompt": prompt,
            "response": wrong,
            "correct": False,
            "rewrite": right,
        },
        {
            "id": "p1#2",
            "problem_id": "p1",
            "prompt": prompt,
            "response": wrong + " Done",
            "correct": False,
            "rewrite": None,
        },
        {
            "id": "p1#3",
            "problem_id": "p1",
            "prompt": prompt,
            "response": " " + right + " ",
            "correct": True,
            "rewrite": right,
        },  # a duplicate of sample 0 up to white space: dropped
    ]
    return problem, [(f"t:{i}", r, problem) for i, r in enumerate(rows)]


def _unpadded_logps(model, prefix, target):
    ids = torch.tensor([prefix + target])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    return [float(logp[len(prefix) + t - 1, tok]) for t, tok in enumerate(target)]


@pytest.mark.parametrize("template", ["shipped", "chatml"])
def test_rl_data_fields_align_with_the_policy_tokens(tokenizer, template):
    tok = tokenizer if template == "shipped" else _chatml(tokenizer)
    policy, grm = _tiny(tok, 0), _tiny(tok, 1)
    problem, triples = _samples()
    cache = SampleCache(None)
    rows = build_rl_records(
        triples,
        tok,
        cached_scorer(TeacherForcedScorer(policy, tok.pad_token_id, 3, "p"), cache, "ref", 8),
        cached_scorer(TeacherForcedScorer(grm, tok.pad_token_id, 3, "g"), cache, "grm", 8),
        bad=BadRecords("error"),
    )
    assert [r["id"] for r in rows] == ["p1#0", "p1#1", "p1#2"]  # the duplicate correct solution is gone
    end = "<|end|>\n" if template == "shipped" else "<|im_end|>\n"
    bos = tok.bos_token_id
    for r, (_, data, _) in zip(rows, triples):
        validate_record(json.loads(json.dumps(r)), "x", len(tok))
        # BOS: exactly the template's (one for the shipped template, none for ChatML), never doubled
        assert r["prompt_ids"].count(bos) == (1 if template == "shipped" else 0)
        assert bos not in r["response_ids"]
        assert tok.decode(r["response_ids"]) == data["response"] + end  # the response, then end of turn
        assert tok.decode(r["prompt_ids"]).endswith(
            "<|assistant|>\n" if template == "shipped" else "<|im_start|>assistant\n"
        )
        # reference log-probs: an unpadded forward of the policy over prompt + response, token by token
        ref = _unpadded_logps(policy, r["prompt_ids"], r["response_ids"])
        assert torch.allclose(torch.tensor(r["ref_logps"]), torch.tensor(ref), atol=1e-5)
        # rewards: the GRM teacher-forces the same response tokens after the rewriting prompt
        grm_prompt = encode_prompt_ids(tok, rewrite_messages(problem, data["response"], 1))
        assert "Reference solution:" in tok.decode(grm_prompt)  # conditioned on the gold solution
        p = torch.tensor(_unpadded_logps(grm, grm_prompt, r["response_ids"])).exp()
        assert torch.allclose(torch.tensor(r["rewards"]), grm_token_rewards(p, r["correct"]), atol=1e-5)
        lo, hi = (0.0, 0.5) if r["correct"] else (-0.1, 0.0)
        assert all(lo - 1e-6 <= v <= hi + 1e-6 for v in r["rewards"])

    correct, wrong, unrewritten = rows
    assert correct["rewrite_ids"] == correct["response_ids"] and set(correct["weights"]) == {0.5}
    assert unrewritten["rewrite_ids"] == [] and unrewritten["weights"] == []
    # the wrong sample's rewrite differs only around "41 = 45" / "45.": weight 1.0 exactly there
    assert wrong["rewrite_ids"] == correct["response_ids"]
    edited = [j for j, w in enumerate(wrong["weights"]) if w == 1.0]
    same_prefix = next(
        i for i, (a, b) in enumerate(zip(wrong["response_ids"], wrong["rewrite_ids"])) if a != b
    )
    assert edited and edited[0] == same_prefix and set(wrong["weights"]) == {0.5, 1.0}
    assert all(
        wrong["response_ids"][j] != wrong["rewrite_ids"][j] for j in edited if j < len(wrong["response_ids"])
    )

    # through the collator (right padding, originals then rewrites): each value sits on its token
    batch = RLMECCollator(tok.pad_token_id)(rows)
    for i, r in enumerate(rows):
        on = batch["labels"][i].ne(IGNORE_INDEX)
        assert batch["labels"][i][on].tolist() == r["response_ids"]
        assert batch["input_ids"][i][on].tolist() == r["response_ids"]
        assert batch["rewards"][i][on].tolist() == pytest.approx(r["rewards"])
        assert batch["ref_logps"][i][on].tolist() == pytest.approx(r["ref_logps"])
        assert int(on.nonzero()[0]) == len(r["prompt_ids"])  # the first label is the first response token
        won = batch["labels"][len(rows) + i].ne(IGNORE_INDEX)
        assert batch["labels"][len(rows) + i][won].tolist() == r["rewrite_ids"]
        assert batch["weights"][i][won].tolist() == pytest.approx(r["weights"])
