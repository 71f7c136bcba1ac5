"""Evaluation tasks run by ``eval.py`` (one sub-package per ``task.runner``).

- ``evaluation/reasoning/``: greedy CoT, Self-Consistency and Self-Agreement on reasoning questions.
"""
