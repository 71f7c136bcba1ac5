"""MT-Bench and MT-Bench++-style multi-turn evaluation (FastChat llm_judge formats, METHODS.md §1).

Pieces: ``fastchat_format`` (question, reference, answer and judgment files as FastChat writes them),
``temperatures`` (FastChat's per-category sampling temperatures), ``report`` (results tables and the
per-turn plot).
"""
