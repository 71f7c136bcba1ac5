"""The runners of ``eval.py``: one module per kind of ``conf/task/`` (``task.runner: runners.<name>.run``).

A *task* is what ``eval.py`` evaluates (``task=reasoning``, ``task=mt_bench``, a named benchmark); its
*runner* is the function here that evaluates it. A runner wires an evaluation (``evaluation/``) to
Lightning (``trainer.predict``), data modules and callbacks, as the stages of ``generate.py``
(``stages/``) do for data making. Each defines ``run(cfg) -> dict[str, float]`` and may define
``headline_metric(cfg) -> str``.
"""
