"""The tasks of ``eval.py``: one module per ``conf/task/`` runner (``task.runner: tasks.<name>.run``).

A task module wires an evaluation (``evaluation/``) to Lightning (``trainer.predict``), data modules and
callbacks, as the stages of ``generate.py`` (``stages/``) do for data making. Each defines
``run(cfg) -> dict[str, float]`` and may define ``headline_metric(cfg) -> str``.
"""
