"""Generation backends: HF (in-process), vLLM (optional), OpenAI-compatible HTTP.

Import the concrete backends from their modules (``inference.backends.hf`` ...) or build one from a
name with :func:`inference.backends.factory.build_backend`. This package module imports nothing heavy.
"""
