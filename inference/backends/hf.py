"""Generation with an in-process Hugging Face causal LM."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from inference.backends.base import Completion, GenerationBackend, Prompt
from inference.chat import encode_prompt
from inference.decoding import DECODE_MODES, generate_token_ids
from inference.sampling import SamplingParams
from inference.stopping import truncate_at_stop
from models.cpu_linear import use_onednn_linears


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    gen_cfg = getattr(model, "generation_config", None)
    for src in (getattr(gen_cfg, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if src is None:
            continue
        ids.update([src] if isinstance(src, int) else list(src))
    return sorted(ids)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Short content hash of a few strided weight samples, to tell random test models apart cheaply."""
    h = hashlib.sha256()
    for i, (name, p) in enumerate(model.named_parameters()):
        if i >= 4:
            break
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 256)][:256].float().cpu()
        h.update(name.encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:12]


class HFBackend(GenerationBackend):
    """Batched generation with a ``transformers`` causal LM and its tokenizer.

    Prompts are sorted by length and run in micro-batches of ``batch_size`` prompts (each expanded to
    ``params.n`` rows after a shared prefill, see :mod:`inference.decoding`). With ``params.seed`` set,
    a prompt's samples depend only on the seed and the prompt text, not on batching.

    The model is switched to eval mode only while generating and then restored, so the backend can
    wrap a model that is being trained (e.g. from a Lightning callback).

    Args:
        model: a causal LM (``PreTrainedModel``).
        tokenizer: its tokenizer; needs a chat template only if chat prompts are sent.
        batch_size: prompts per forward pass.
        model_id: fixed name for cache keys; by default ``"<name_or_path>@<weight fingerprint>"``,
            recomputed on every access so that a model trained in between never reuses stale samples.
        decode: ``"eager"`` (default); ``"prepacked"``: the eager loop with the float32 CPU linear
            layers on oneDNN-packed weights (:mod:`inference.prepacked`; packed once, about 2x eager
            for SmolLM2 on CPU, same greedy text on the benchmark's prompts, one extra copy of the
            weights in memory); or ``"compiled"``: a static KV cache and a ``torch.compile``-d
            decode step (:mod:`inference.static_decode`; same greedy text, one compile per batch
            shape; measured slower than eager for SmolLM2 on CPU, see docs/decoding_speed.md).
            ``"static"`` is the same without compiling.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        batch_size: int = 8,
        model_id: str | None = None,
        decode: str = "eager",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")
        if decode == "prepacked":
            from inference.prepacked import packable_layers

            packable_layers(model)  # refused at start-up, not at the first generation
        self.decode = decode
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.eos_token_ids = _eos_ids(model, tokenizer)
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = self.eos_token_ids[0] if self.eos_token_ids else 0
        self.pad_token_id = int(pad)
        self._fixed_model_id = model_id

    @property
    def model_id(self) -> str:  # type: ignore[override]
        """Cache-key name of the model (see the class docstring)."""
        if self._fixed_model_id is not None:
            return self._fixed_model_id
        # Name plus a weight fingerprint: re-trained weights (even saved to the same folder) get a new
        # id, so the sample cache never serves another model's samples.
        name = getattr(getattr(self.model, "config", None), "_name_or_path", "") or type(self.model).__name__
        return f"{name}@{model_fingerprint(self.model)}"

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        dtype: str | torch.dtype = "auto",
        device: str = "cpu",
        batch_size: int = 8,
        tokenizer_path: str | None = None,
        model_id: str | None = None,
        chat_template: str | None = None,
        decode: str = "eager",
        cpu_linear: str = "auto",
    ) -> HFBackend:
        """Load a model folder (``save_pretrained`` layout) and its tokenizer; ``chat_template`` (a Jinja
        string) overrides the tokenizer's own; ``cpu_linear`` as ``model.cpu_linear`` (float32 CPU linear
        layers on oneDNN, ``models/cpu_linear.py``)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import models  # noqa: F401  (registers Quartet's model classes, e.g. an exported MoE, with the Auto classes)

        tok = AutoTokenizer.from_pretrained(tokenizer_path or path)
        if chat_template:
            tok.chat_template = chat_template
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        use_onednn_linears(model, cpu_linear)
        return cls(model, tok, batch_size=batch_size, model_id=model_id, decode=decode)

    def describe(self) -> dict[str, Any]:
        template = getattr(self.tokenizer, "chat_template", None) or ""
        return {
            **super().describe(),
            "chat_template_sha": hashlib.sha256(template.encode()).hexdigest()[:16] if template else None,
            "batch_size": self.batch_size,
            "dtype": str(next(self.model.parameters()).dtype),
            "device": str(next(self.model.parameters()).device),
        }

    def _stop_checker(self, stops: Sequence[str]):
        tok = self.tokenizer

        def check(tails: list[list[int]]) -> list[bool]:
            texts = tok.batch_decode(tails, skip_special_tokens=True)
            return [any(s in t for s in stops) for t in texts]

        return check

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt (chat template applied for message lists)."""
        return encode_prompt(self.tokenizer, prompt)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        was_training = self.model.training
        self.model.eval()
        try:
            return self._generate(prompts, params)
        finally:
            self.model.train(was_training)

    def _generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        encoded = [self.encode(p) for p in prompts]
        seed_keys = [",".join(map(str, ids)) for ids in encoded]
        # Longest stop string in tokens is at most its length in characters (+ slack for merges).
        window = max((len(s) for s in params.stop), default=0) + 4
        checker = self._stop_checker(params.stop) if params.stop else None
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[list[Completion] | None] = [None] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            seqs = generate_token_ids(
                self.model,
                [encoded[i] for i in idx],
                params,
                eos_token_ids=self.eos_token_ids,
                pad_token_id=self.pad_token_id,
                stop_checker=checker,
                stop_window=window,
                seed_keys=[seed_keys[i] for i in idx],
                decode=self.decode,
            )
            for i, group in zip(idx, seqs):
                texts = self.tokenizer.batch_decode([s.token_ids for s in group], skip_special_tokens=True)
                comps = []
                for text, seq in zip(texts, group):
                    text, hit = truncate_at_stop(text, params.stop)
                    reason = "stop" if hit else seq.finish_reason
                    comps.append(
                        Completion(
                            text=text,
                            prompt_tokens=len(encoded[i]),
                            completion_tokens=seq.num_tokens,
                            finish_reason=reason,
                        )
                    )
                results[i] = comps
        return [r for r in results if r is not None]
