"""Questions of registered benchmarks (``eval.py task=gsm8k``, ``task=reasoning_mix``) for ``trainer.predict``.

Each benchmark is read in its own hub schema (:mod:`reasoning.benchmarks`), from the hub or from a
local file with the same columns, and the few-shot pool from its train split when exemplars are asked
for. The batches, rank shards and ``fewshot_pool`` are those of :class:`ReasoningQuestionDataModule`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datamodules.reasoning import ReasoningQuestionDataModule
from reasoning.benchmarks import BenchmarkSpec, benchmark_spec, load_benchmark
from utils.errors import ConfigError


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


class BenchmarkQuestionDataModule(ReasoningQuestionDataModule):
    """The questions of one or several registered benchmarks.

    Args:
        benchmarks: registered names (``conf/task/<name>.yaml``) or ``task.benchmark`` nodes.
        path: a local file in the hub schema (one benchmark only); ``paths``: name -> file, for a mix.
        split: evaluate this split instead of each benchmark's own.
        limit: the first N questions of each benchmark.
        fewshot_path / fewshot_paths: local few-shot files (else the hub's ``fewshot_split``).
        num_fewshot: the few-shot pool is loaded only when this is > 0.
    """

    def __init__(
        self,
        benchmarks: Sequence[str | Mapping[str, Any]],
        path: str | None = None,
        paths: Mapping[str, str] | None = None,
        split: str | None = None,
        limit: int | None = None,
        batch_size: int = 16,
        fewshot_path: str | None = None,
        fewshot_paths: Mapping[str, str] | None = None,
        num_fewshot: int = 0,
    ) -> None:
        super().__init__(path=str(path), split=split or "test", limit=limit, batch_size=batch_size)
        items = _plain(benchmarks) or []
        if not isinstance(items, list) or not items:
            raise ConfigError(["data.benchmarks (task.benchmarks) must be a non-empty list of benchmarks"])
        self.specs: list[BenchmarkSpec] = [benchmark_spec(b) for b in items]
        names = [s.name for s in self.specs]
        paths, fewshot_paths = dict(_plain(paths) or {}), dict(_plain(fewshot_paths) or {})
        problems = [f"data.paths.{n} is not one of the benchmarks {names}" for n in paths if n not in names]
        problems += [
            f"data.fewshot_paths.{n} is not one of the benchmarks {names}"
            for n in fewshot_paths
            if n not in names
        ]
        for key, value, many in (("path", path, paths), ("fewshot_path", fewshot_path, fewshot_paths)):
            if value is not None and len(self.specs) > 1:
                problems.append(
                    f"data.{key} names one file but there are {len(names)} benchmarks: use data.{key}s"
                )
            elif value is not None:
                many[names[0]] = value
        if len(set(names)) != len(names):
            problems.append(f"data.benchmarks lists a benchmark twice: {names}")
        if problems:
            raise ConfigError(problems)
        self.paths, self.fewshot_paths = paths, fewshot_paths
        self.split_override, self.num_fewshot = split, num_fewshot

    @property
    def task_descriptions(self) -> dict[str, str]:
        """Each benchmark's one-line description, shown when the question type is known."""
        return {s.name: s.description for s in self.specs if s.description}

    def setup(self, stage: str | None = None) -> None:
        if self.records:
            return
        for spec in self.specs:
            self.records += load_benchmark(spec, self.paths.get(spec.name), self.split_override, self.limit)
            if self.num_fewshot > 0:
                self.fewshot_pool += self._fewshot(spec)

    def _fewshot(self, spec: BenchmarkSpec) -> list:
        path = self.fewshot_paths.get(spec.name)
        if path is None and spec.fewshot_split is None:
            raise ConfigError(
                [f"prompt.num_fewshot > 0 but {spec.name} has no few-shot split: set data.fewshot_path"]
            )
        return load_benchmark(spec, path, spec.fewshot_split or "train")
