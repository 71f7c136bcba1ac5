"""Parrot dialogue rollout (arXiv 2310.07301): the answer model and the Ask model talk turn by turn.

Pieces: ``filters`` (which turns end a session, and why) and ``stats`` (what ``summary.json`` reports
about the collected sessions).
"""
