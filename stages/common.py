"""What every generation stage shares: the chat-generator protocol, its adapter to the shared
inference layer, and atomic JSONL output."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from utils.atomic import write_jsonl_atomic  # noqa: F401  (the stages' atomic JSONL output)
from utils.errors import ConfigError

Message = dict[str, str]
#: A chat model as a stage sees it: chat prompts (lists of messages) in, one reply per prompt out.
ChatGenerator = Callable[[list[list[Message]]], list[str]]


class BackendGenerator:
    """A :data:`ChatGenerator` over an ``inference`` backend: applies the backend's chat templating and
    batching, and returns the first completion's text for each prompt."""

    def __init__(self, backend: Any, params: Any):
        self.backend, self.params = backend, params
        self.model_id = getattr(backend, "model_id", "unknown")

    def __call__(self, prompts: list[list[Message]]) -> list[str]:
        if not prompts:
            return []
        return [group[0].text for group in self.backend.generate(prompts, self.params)]

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "sampling": self.params.to_dict()}


def build_generator(cfg: Mapping[str, Any], what: str = "stage.generator") -> BackendGenerator:
    """A generator from config: ``backend`` (``hf`` | ``vllm`` | ``openai_http``), the backend's own
    keys (``path``, ``dtype``, ``device``, ``batch_size``, ...), and ``sampling`` (``SamplingParams``
    fields: ``temperature``, ``top_p``, ``max_new_tokens``, ``seed``, ``stop``, ...)."""
    from inference import SamplingParams, build_backend

    cfg = dict(cfg)
    name = cfg.pop("backend", "hf")
    sampling = dict(cfg.pop("sampling", None) or {})
    if name in ("hf", "vllm") and not cfg.get("path"):
        raise ConfigError([f"{what}.path is required: the model folder (or hub id) to generate with"])
    try:
        params = SamplingParams(**sampling)
    except (TypeError, ValueError) as e:
        raise ConfigError([f"{what}.sampling: {e}"]) from None
    kwargs = {k: v for k, v in cfg.items() if v is not None}
    try:
        backend = build_backend(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError([f"{what}: {e}"]) from None
    return BackendGenerator(backend, params)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]
