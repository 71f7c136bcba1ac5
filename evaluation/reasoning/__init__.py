"""Reasoning evaluation (greedy CoT, Self-Consistency, Self-Agreement; arXiv 2203.11171, 2311.08154).

- ``records.py``: question records and their loader;
- ``prompts.py``: the CoT and agreement prompts (the scenario grid);
- ``methods.py``: :func:`self_consistency`, :func:`self_agreement` and the cached generation they share;
- ``evaluator.py``: :func:`evaluate_reasoning` (plain Python) and the results writer;
- ``scoring.py``: metrics as a pure function of the per-question rows, and shard merging;
- ``spec.py``: :class:`ReasoningEvalSpec`, the settings shared by ``eval.py`` and the training callback;

The ``eval.py`` task that runs it under ``trainer.predict`` is ``runners/reasoning.py``.
"""
