"""Evaluation tasks run by ``eval.py`` (one sub-package per ``task.runner``).

- ``evaluation/reasoning/``: greedy CoT, Self-Consistency and Self-Agreement on reasoning questions.
- ``evaluation/mt_bench/``: MT-Bench / MT-Bench++-style multi-turn answering and judging (FastChat formats).
"""
