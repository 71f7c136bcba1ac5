"""Batched decoding for HF causal LMs with a shared-prefix KV cache.

Why a hand-written loop instead of ``model.generate(num_return_sequences=m)``: ``generate`` copies
every prompt m times *before* the prefill, so the prompt is run through the model m times. Here the
prompt batch is prefilled once, the KV cache is repeat-interleaved to ``batch * m`` rows, and only the
decode steps run at full width. The loop also:

- checks stop strings incrementally (only the tail of each live row is decoded each step),
- drops finished rows from the batch (the cache is compacted), so a batch whose rows end early
  gets cheaper instead of decoding padding until the slowest row finishes,
- seeds one RNG per prompt, so a prompt's samples depend on ``(seed, prompt)`` and not on which other
  prompts shared its batch (useful when an interrupted evaluation resumes from a partial cache).

Left padding: prompts are left-padded; position ids count only real tokens (as HF does), and the
2-D attention mask grows by one column per step.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from inference.kv_cache import preallocate
from inference.sampling import SamplingParams

#: Given token-id tails of the live rows, say which rows now contain a stop string.
StopChecker = Callable[[list[list[int]]], list[bool]]


@dataclass
class TokenSequence:
    """One generated continuation.

    ``token_ids`` excludes the EOS token; ``num_tokens`` counts every token the model produced for this
    row (the EOS included), which is what the call cost.
    """

    token_ids: list[int]
    num_tokens: int
    finish_reason: str  # "eos", "stop" or "length"
    eos_token_id: int | None = None  # the EOS token that ended it (finish_reason "eos"): RL trains on it


def prompt_seed(seed: int, key: str) -> int:
    """A 63-bit seed derived from a base seed and a prompt (stable across processes)."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _sorted_desc_values(probs: torch.Tensor) -> torch.Tensor:
    """Row-wise descending sort of values only.

    On CPU, NumPy's value sort is several times faster than ``torch.sort`` (which also builds an index
    tensor we do not need); elsewhere ``torch.sort`` is used.
    """
    if probs.device.type == "cpu":
        return torch.from_numpy(np.ascontiguousarray(np.sort(probs.numpy(), axis=-1)[:, ::-1]))
    return torch.sort(probs, dim=-1, descending=True).values


def sampling_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Probabilities after temperature, top-k and nucleus (top-p) filtering (rows sum to <= 1).

    Nucleus filtering keeps the smallest set of most likely tokens whose mass reaches ``top_p``: a
    token is kept when the mass of the tokens strictly more likely than it is below ``top_p``, so the
    most likely token is always kept; tokens tied with the last kept one are kept too. The set is
    found from a value-only sort (a threshold), with no argsort or scatter.
    """
    scores = logits / temperature
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = scores.softmax(dim=-1)
    if top_p < 1.0:
        desc = _sorted_desc_values(probs)
        mass_before = desc.cumsum(dim=-1) - desc
        num_kept = (mass_before < top_p).sum(dim=-1, keepdim=True).clamp(min=1)
        threshold = desc.gather(-1, num_kept - 1).to(probs.device)
        probs = probs * (probs >= threshold)
    return probs


def sample_inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Draw one token per row from (unnormalised) ``probs`` using one uniform number per row.

    Inverse-CDF sampling needs a single random number per row, where ``torch.multinomial`` draws one
    per vocabulary entry; the cumulative sum is taken in float64 so large vocabularies stay exact.
    """
    cdf = probs.double().cumsum(dim=-1)
    target = uniforms.double().unsqueeze(1) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return idx.clamp_(max=probs.shape[-1] - 1)


def _forward_options(model: torch.nn.Module) -> tuple[str, dict]:
    """The cache keyword the model's forward takes (``cache`` in transformers >= 5.x, ``past_key_values``
    in older or remote-code models) and ``logits_to_keep=1`` when supported (skips the LM head on all
    but the last position)."""
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    return cache_kw, extra


def _model_cache(out: object) -> object:
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    if cache is None:
        raise RuntimeError("The model returned no KV cache; it must support use_cache=True.")
    return cache


@torch.inference_mode()
def generate_token_ids(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    *,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    stop_checker: StopChecker | None = None,
    stop_window: int = 16,
    seed_keys: Sequence[str] | None = None,
    compact_fraction: float = 0.25,
    decode: str = "eager",
) -> list[list[TokenSequence]]:
    """Generate ``params.n`` continuations for each tokenised prompt, in one batch.

    Args:
        model: an HF causal LM (anything whose forward takes ``input_ids``, ``attention_mask``,
            ``position_ids``, ``use_cache`` and ``cache`` or ``past_key_values``, and returns logits and
            the cache).
        prompts: token ids per prompt (no padding).
        params: decoding settings; ``params.stop`` is enforced through ``stop_checker``.
        eos_token_ids: ids that end a sequence (ignored when ``params.ignore_eos``).
        pad_token_id: id used for left padding (masked out, so any id works).
        stop_checker: called each step with the last ``stop_window`` generated ids of every live row;
            rows it flags are finished with reason ``"stop"``. The caller truncates the final text.
        stop_window: tokens of tail to pass to ``stop_checker``.
        seed_keys: one string per prompt (e.g. the prompt text); with ``params.seed`` set, each prompt
            gets its own RNG seeded from ``(seed, key)``. Defaults to the prompt's token ids.
        compact_fraction: drop finished rows from the batch once they are at least this fraction of
            the live rows (1.0 disables compaction until the batch is fully finished).
        decode: ``"eager"`` (a dynamic cache, finished rows dropped), ``"prepacked"`` (the eager loop
            with the linear layers on oneDNN-packed weights, CPU float32, :mod:`inference.prepacked`),
            ``"compiled"`` (a static cache and a ``torch.compile``-d step,
            :mod:`inference.static_decode`) or ``"static"`` (the same static cache, not compiled). The
            static modes never drop rows (a fixed batch shape).

    Returns:
        ``result[i][j]`` is the j-th continuation of prompt i.
    """
    if len(prompts) == 0:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("Every prompt must have at least one token (got an empty prompt).")
    if decode not in DECODE_MODES:
        raise ValueError(f"decode={decode!r} must be one of {', '.join(DECODE_MODES)}")
    if decode == "prepacked":
        from inference.prepacked import prepacked_linears

        with prepacked_linears(model):
            return generate_token_ids(
                model,
                prompts,
                params,
                eos_token_ids=eos_token_ids,
                pad_token_id=pad_token_id,
                stop_checker=stop_checker,
                stop_window=stop_window,
                seed_keys=seed_keys,
                compact_fraction=compact_fraction,
            )
    device = next(model.parameters()).device
    n, rows = params.n, len(prompts) * params.n
    st = _prefill(model, prompts, n, pad_token_id, params.max_new_tokens, device)
    if decode != "eager":
        st = _to_static(st, model, params.max_new_tokens, decode)
        compact_fraction = float("inf")
    generators = _prompt_generators(params, prompts, seed_keys, device)
    eos = torch.tensor(sorted(set(eos_token_ids)) if not params.ignore_eos else [], dtype=torch.long)
    eos = eos.to(device)
    generated = torch.full((rows, params.max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    lengths = torch.zeros(rows, dtype=torch.long)  # tokens generated per original row (EOS included)
    reasons = ["length"] * rows
    live = torch.arange(rows)  # original row index of each current batch row
    done_live = torch.zeros(rows, dtype=torch.bool)  # per current batch row
    use_stop = stop_checker is not None and len(params.stop) > 0

    for step in range(params.max_new_tokens):
        next_tok = _choose_tokens(st.logits, params, generators, live, n, device)
        # ---- record tokens of rows that are still running ----
        running = ~done_live
        run_rows = live[running]
        generated[run_rows.to(device), step] = next_tok[running.to(device)]
        lengths[run_rows] += 1
        newly_done = torch.zeros_like(done_live)
        if eos.numel() > 0:
            is_eos = torch.isin(next_tok, eos).cpu() & running
            for r in live[is_eos].tolist():
                reasons[r] = "eos"
            newly_done |= is_eos
        if use_stop:
            assert stop_checker is not None
            window = generated[:, max(0, step + 1 - stop_window) : step + 1]  # every row's tail
            _mark_stops(stop_checker, running & ~newly_done, window, newly_done, reasons, live)
        done_live |= newly_done
        if bool(done_live.all()) or step == params.max_new_tokens - 1:
            break
        # ---- drop finished rows once they are a large enough share of the batch ----
        num_done = int(done_live.sum())
        if num_done > 0 and num_done >= compact_fraction * done_live.numel():
            keep = (~done_live).nonzero().squeeze(1)
            next_tok = st.select(keep.to(device), next_tok)
            live, done_live = live[keep], done_live[keep]
        st.decode(model, next_tok)
    return _collect(generated.cpu(), lengths, reasons, len(prompts), n)


DECODE_MODES = ("eager", "prepacked", "compiled", "static")


def _to_static(st: _DecodeState, model: torch.nn.Module, max_new_tokens: int, decode: str) -> Any:
    """The prefilled batch moved onto a static cache (:func:`inference.static_decode.static_state`)."""
    if st.cache_kw != "cache" or "logits_to_keep" not in st.extra:
        raise ValueError(
            f"decode={decode!r} needs a transformers >= 5 model (forward takes cache, logits_to_keep)"
        )
    from inference.static_decode import static_state

    compiled = decode == "compiled"
    return static_state(st.cache, st.attn, st.logits, st.next_pos, model.config, max_new_tokens, compiled)


@dataclass
class _DecodeState:
    """The batch being decoded: KV cache, attention mask, last logits and next positions per row."""

    cache: Any
    attn: torch.Tensor
    logits: torch.Tensor
    next_pos: torch.Tensor
    cache_kw: str
    extra: dict[str, Any]

    def select(self, keep: torch.Tensor, next_tok: torch.Tensor) -> torch.Tensor:
        """Keep only the rows ``keep`` (finished rows are dropped); returns ``next_tok`` for them."""
        self.cache.batch_select_indices(keep)
        self.attn, self.next_pos = self.attn[keep], self.next_pos[keep]
        return next_tok[keep]

    def decode(self, model: torch.nn.Module, next_tok: torch.Tensor) -> None:
        """One decode step of every current row with its token ``next_tok``."""
        self.attn = torch.cat([self.attn, self.attn.new_ones((self.attn.shape[0], 1))], dim=1)
        out = model(
            input_ids=next_tok.unsqueeze(1),
            attention_mask=self.attn,
            position_ids=self.next_pos.unsqueeze(1),
            use_cache=True,
            **{self.cache_kw: self.cache},
            **self.extra,
        )
        self.cache = _model_cache(out)
        self.logits = out.logits[:, -1, :].float()
        self.next_pos = self.next_pos + 1


def _prefill(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    n: int,
    pad_token_id: int,
    max_new_tokens: int,
    device: torch.device,
) -> _DecodeState:
    """Run each prompt once (left padded), then share its KV cache across its ``n`` sample rows."""
    num_prompts, max_len = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((num_prompts, max_len), pad_token_id, dtype=torch.long)
    attn = torch.zeros((num_prompts, max_len), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, max_len - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        attn[i, max_len - len(p) :] = 1
    input_ids, attn = input_ids.to(device), attn.to(device)
    position_ids = (attn.cumsum(-1) - 1).masked_fill(attn == 0, 1)
    cache_kw, extra = _forward_options(model)
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids, use_cache=True, **extra)
    cache = _model_cache(out)
    logits = out.logits[:, -1, :].float()
    next_pos = position_ids[:, -1] + 1
    # Room for every decode step up front: no per-step torch.cat of the whole cache.
    preallocate(cache, max_new_tokens)
    if n > 1:
        # Share the prompt's KV cache across its n samples instead of recomputing it n times.
        cache.batch_repeat_interleave(n)
        attn = attn.repeat_interleave(n, dim=0)
        logits = logits.repeat_interleave(n, dim=0)
        next_pos = next_pos.repeat_interleave(n, dim=0)
    return _DecodeState(cache, attn, logits, next_pos, cache_kw, extra)


def _prompt_generators(
    params: SamplingParams,
    prompts: Sequence[Sequence[int]],
    seed_keys: Sequence[str] | None,
    device: torch.device,
) -> list[torch.Generator] | None:
    """One RNG per prompt, seeded from ``(params.seed, key)``; None when greedy or unseeded."""
    if params.greedy or params.seed is None:
        return None
    keys = list(seed_keys) if seed_keys is not None else [",".join(map(str, p)) for p in prompts]
    if len(keys) != len(prompts):
        raise ValueError("seed_keys must have one entry per prompt")
    return [torch.Generator(device=device).manual_seed(prompt_seed(params.seed, k)) for k in keys]


def _choose_tokens(
    logits: torch.Tensor,
    params: SamplingParams,
    generators: list[torch.Generator] | None,
    live: torch.Tensor,
    n: int,
    device: torch.device,
) -> torch.Tensor:
    """The next token of every current row: argmax, or an inverse-CDF draw from the filtered probs."""
    if params.greedy:
        return logits.argmax(dim=-1)
    probs = sampling_probs(logits, params.temperature, params.top_k, params.top_p)
    if generators is None:
        uniforms = torch.rand(probs.shape[0], device=device)
    else:
        # One RNG per prompt, and each prompt draws n numbers per step whatever number of its
        # rows is still live, so its stream never depends on other prompts or on compaction.
        prompt_of_row = live // n
        present = torch.unique_consecutive(prompt_of_row)
        draws = torch.stack(
            [torch.rand(n, generator=generators[pid], device=device) for pid in present.tolist()]
        )
        slot = torch.searchsorted(present, prompt_of_row)
        uniforms = draws[slot.to(device), (live % n).to(device)]
    return sample_inverse_cdf(probs, uniforms)


def _mark_stops(
    stop_checker: StopChecker,
    candidates: torch.Tensor,
    window: torch.Tensor,
    newly_done: torch.Tensor,
    reasons: list[str],
    live: torch.Tensor,
) -> None:
    """Finish (reason ``stop``) the candidate rows whose generated tail the checker flags."""
    check = candidates.nonzero().squeeze(1)
    if check.numel() == 0:
        return
    hits = stop_checker(window[live[check].to(window.device)].tolist())
    for idx, hit in zip(check.tolist(), hits):
        if hit:
            newly_done[idx] = True
            reasons[int(live[idx])] = "stop"


def _collect(
    gen_cpu: torch.Tensor, lengths: torch.Tensor, reasons: list[str], num_prompts: int, n: int
) -> list[list[TokenSequence]]:
    """``result[i][j]``: the j-th continuation of prompt i (EOS dropped from the ids, counted in tokens)."""
    result: list[list[TokenSequence]] = []
    for i in range(num_prompts):
        group = []
        for j in range(n):
            r = i * n + j
            length = int(lengths[r])
            ids = gen_cpu[r, :length].tolist()
            eos_id = ids.pop() if reasons[r] == "eos" else None
            group.append(TokenSequence(ids, num_tokens=length, finish_reason=reasons[r], eos_token_id=eos_id))
        result.append(group)
    return result
