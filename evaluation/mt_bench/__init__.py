"""MT-Bench and MT-Bench++-style multi-turn evaluation (FastChat llm_judge formats, METHODS.md §1).

Pieces: ``fastchat_format`` (question, reference, answer and judgment files as FastChat writes them),
``temperatures`` (FastChat's per-category sampling temperatures), ``answering`` (turn-by-turn answers),
``extension`` (MT-Bench++-style follow-ups, written once from a named source), ``judge_prompts`` and
``template_turns`` (what the judge sees for turn k), ``grading`` (every turn graded on its own answer,
single or pairwise), ``pairwise`` (both orders, FastChat's tie rule, win rates), ``report`` (results
tables and the per-turn plots), ``standin_judge`` (the tiny demo's stand-in).
"""
