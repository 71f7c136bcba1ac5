"""The reasoning domain, shared by evaluation (greedy, SC, SA), the reasoning data modules and the RLMEC stages.

- ``questions.py``: question records (``ReasoningRecord``) and their loader;
- ``prompts.py``: the chain-of-thought and agreement prompts (Self-Agreement's scenario grid);
- ``answers.py``: answer extraction and comparison (numbers, choices, yes/no, text).
"""
