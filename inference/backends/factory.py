"""Build a backend from a short name plus keyword settings (what a config file holds)."""

from __future__ import annotations

from typing import Any

from inference.backends.base import GenerationBackend

BACKENDS = ("hf", "vllm", "openai_http")


def build_backend(name: str, **kwargs: Any) -> GenerationBackend:
    """Construct a backend.

    - ``hf``: ``path`` (model folder) plus ``dtype``, ``device``, ``batch_size``, ``tokenizer_path``;
      or ``model`` + ``tokenizer`` objects plus ``batch_size``, ``model_id``.
    - ``vllm``: ``path`` plus vLLM engine arguments.
    - ``openai_http``: ``base_url``, ``model``, ``api_key_env`` and the other
      :class:`~inference.backends.openai_http.OpenAIHTTPBackend` options.
    """
    if name == "hf":
        from inference.backends.hf import HFBackend

        if "model" in kwargs:
            return HFBackend(**kwargs)
        if "path" not in kwargs:
            raise ValueError("backend 'hf' needs 'path' (a model folder) or 'model' and 'tokenizer' objects")
        path = kwargs.pop("path")
        return HFBackend.from_pretrained(path, **kwargs)
    if name == "vllm":
        from inference.backends.vllm import VLLMBackend

        if "path" not in kwargs:
            raise ValueError("backend 'vllm' needs 'path' (a model folder or name)")
        path = kwargs.pop("path")
        return VLLMBackend(path, **kwargs)
    if name == "openai_http":
        from inference.backends.openai_http import OpenAIHTTPBackend

        if kwargs.get("chat_template"):
            raise ValueError(
                "chat_template applies to the hf and vllm backends; an openai_http server renders chat "
                "prompts with its own template (set it on the server)"
            )
        kwargs.pop("chat_template", None)
        missing = [k for k in ("base_url", "model") if k not in kwargs]
        if missing:
            raise ValueError(f"backend 'openai_http' needs {missing}")
        return OpenAIHTTPBackend(**kwargs)
    raise ValueError(f"Unknown backend {name!r}; choose one of {list(BACKENDS)}")
