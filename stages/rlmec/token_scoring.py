"""Token ids of a (prompt, response) pair and teacher-forced per-token log-probs, for ``rlmec_rl_data``.

:func:`encode_sample` renders the conversation with the tokenizer's chat template twice (the prompt
with the generation prompt, and the prompt plus the assistant turn) and takes the response tokens as
the tokens after the prompt's: exactly the tokens SFT trains on (the end-of-turn tokens included), with
the template's own BOS only (``add_special_tokens=False``). A template whose full render doesn't start
with the prompt render, or a tokenisation that merges across the boundary, is a :class:`BadRecord`.

:class:`TeacherForcedScorer` is a :class:`~inference.backends.base.GenerationBackend` whose "prompt" is a
JSON job ``{"prefix": [ids], "target": [ids]}`` and whose "completion" is the JSON list of
log p(target_t | prefix, target_<t). Scoring thus goes through the shared generation cache
(:func:`~inference.generation_cache.generate_cached`): chunked, appended after every chunk, resumable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from algorithms.logprobs import IGNORE_INDEX
from algorithms.reference import frozen_token_logprobs
from inference.backends.base import Completion, GenerationBackend, Prompt
from inference.backends.hf import model_fingerprint
from inference.generation_cache import CachedGenerator
from inference.sample_cache import SampleCache
from inference.sampling import SamplingParams
from stages.rlmec.sample_records import BadRecord

Message = dict[str, str]


def encode_prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Token ids of the chat-templated prompt, up to and including the generation prompt."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_sample(tokenizer: Any, messages: Sequence[Message], response: str) -> tuple[list[int], list[int]]:
    """``(prompt_ids, response_ids)``: prompt + response_ids is the tokenisation of the whole chat."""
    prompt_text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": response}], tokenize=False
    )
    if not full_text.startswith(prompt_text):
        raise BadRecord(
            "template_mismatch", "the chat template's render of the answer doesn't extend the prompt's"
        )
    prompt_ids = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    full_ids = list(tokenizer(full_text, add_special_tokens=False)["input_ids"])
    if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        raise BadRecord("token_boundary", "the response's tokens merge with the prompt's at the boundary")
    return prompt_ids, full_ids[len(prompt_ids) :]


def score_job(prefix: Sequence[int], target: Sequence[int]) -> str:
    """The scorer's prompt for one (prefix, target) pair."""
    return json.dumps({"prefix": list(prefix), "target": list(target)}, separators=(",", ":"))


def teacher_forced_logprobs(
    model: torch.nn.Module, jobs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int
) -> list[list[float]]:
    """log p(target_t | prefix, target_<t) for every job, one float per target token (fp32).

    One right-padded forward for all jobs; labels are -100 off the targets, so the shared frozen scorer
    :func:`~algorithms.reference.frozen_token_logprobs` scores exactly the target positions."""
    device = next(model.parameters()).device
    longest = max(len(p) + len(t) for p, t in jobs)
    ids = torch.full((len(jobs), longest), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    attn = torch.zeros_like(ids)
    for i, (p, t) in enumerate(jobs):
        ids[i, : len(p) + len(t)] = torch.as_tensor([*p, *t])
        labels[i, len(p) : len(p) + len(t)] = torch.as_tensor(list(t))
        attn[i, : len(p) + len(t)] = 1
    logp, mask = frozen_token_logprobs(model, ids.to(device), attn.to(device), labels.to(device))
    logp, mask = logp.float().cpu(), mask.cpu()
    return [logp[i][mask[i]].tolist() for i in range(len(jobs))]


class TeacherForcedScorer(GenerationBackend):
    """A model as a scoring backend (see the module docstring); ``batch_size`` jobs per forward."""

    def __init__(self, model: torch.nn.Module, pad_id: int, batch_size: int = 8, model_id: str | None = None):
        self.model, self.pad_id, self.batch_size = model, int(pad_id), int(batch_size)
        self._model_id = model_id

    @property
    def model_id(self) -> str:  # type: ignore[override]
        if self._model_id is not None:
            return self._model_id
        name = getattr(getattr(self.model, "config", None), "_name_or_path", "") or type(self.model).__name__
        return f"{name}@{model_fingerprint(self.model)}"

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        jobs = []
        for p in prompts:
            job = json.loads(str(p))
            jobs.append((job["prefix"], job["target"]))
        out: list[list[Completion]] = []
        for start in range(0, len(jobs), self.batch_size):
            part = jobs[start : start + self.batch_size]
            for (prefix, target), values in zip(part, teacher_forced_logprobs(self.model, part, self.pad_id)):
                text = json.dumps(values)
                out.append([Completion(text, len(prefix), len(target))] * params.n)
        return out


def cached_scorer(
    scorer: TeacherForcedScorer, cache: SampleCache, kind: str, chunk_size: int
) -> CachedGenerator:
    """``scorer`` behind the shared generation cache."""
    return CachedGenerator(scorer, SamplingParams(temperature=0.0, max_new_tokens=1), cache, kind, chunk_size)


def score(
    generator: CachedGenerator, jobs: Sequence[tuple[Sequence[int], Sequence[int]]], ids: Sequence[str]
) -> list[list[float]]:
    """The per-token log-probs of every job, from the cache where present; each list is checked to
    hold one value per target token."""
    texts = generator([score_job(p, t) for p, t in jobs], ids=list(ids))
    out = []
    for (_, target), text, qid in zip(jobs, texts, ids):
        values = json.loads(text)
        if len(values) != len(target):
            raise RuntimeError(f"{qid}: {len(values)} log-probs for {len(target)} target tokens")
        out.append(values)
    return out
