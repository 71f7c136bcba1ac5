"""Data-making stages run by ``generate.py`` (``python generate.py stage=<name> ...``).

A stage is a ``run(cfg) -> dict`` function plus a config ``conf/stage/<name>.yaml`` whose ``runner``
key names it (e.g. ``stages.capo_negatives.runner.run``). A method's stages live in one folder: a
method with one stage has ``stages/<stage>/`` (``capo_negatives``, ``parrot_rollout``); a method with
a pipeline of stages has ``stages/<method>/`` with one module per stage (``stages/rlmec/sample.py``
for ``stage=rlmec_sample``, ``edit.py``, ``grm_data.py``, ``rl_data.py``, ``baseline_data.py``) and the
pieces they share beside them. Stages never import ``lightning_modules``: shared algorithms come from
``algorithms/``. ``run`` gets the whole composed config (``cfg.stage`` holds the
stage's own settings; ``cfg.paths``/``cfg.seed`` are shared), writes its outputs atomically, and
returns a JSON-able summary that ``generate.py`` saves as ``summary.json`` in the run folder.

Stages:
- ``capo_negatives``: CaPO preference pairs from multi-turn chat data (METHODS.md §1).
- ``parrot_rollout``: multi-turn dialogues between an answer model and the Ask model (METHODS.md §1).
- ``rlmec_sample``, ``rlmec_edit``, ``rlmec_grm_data``, ``rlmec_rl_data``, ``rlmec_baseline_data``: the
  RLMEC data pipeline (METHODS.md §3; ``stages/rlmec/``).

Models that stages generate with are reached through ``stages.common.ChatGenerator``, a callable from
a list of chat prompts to a list of strings, built from config by ``stages.common.build_generator``
on top of the shared inference layer (``inference/``), so any of its backends (HF, vLLM, an
OpenAI-compatible server) can be the generator, and tests can pass a plain function. Judges (rating,
yes/no) are ``evaluation.judges``.

Every stage is resumable: ``build_generator`` returns an ``inference.generation_cache.CachedGenerator``
over the stage's sample cache (``stage.cache``), which appends each chunk of replies as it is made and
serves them on a rerun (``python generate.py resume_dir=<run folder>``); the stage builds its records
in a fixed order and writes its output atomically at the end, so a resumed run's output equals an
uninterrupted run's.
"""
