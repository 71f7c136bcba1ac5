"""The benchmark registry: the RLMEC and Self-Agreement papers' benchmarks, one YAML each.

Every ``conf/task/<name>.yaml`` that holds a ``task.benchmark`` node is a registered benchmark:
``python eval.py task=gsm8k`` evaluates it, and ``task=reasoning_mix task.benchmarks=[gsm8k,csqa]``
pools several (Self-Agreement's "question type unknown" scenario, arXiv 2311.08154). A benchmark node
says where the questions are (hub dataset id, configs, split, the few-shot split), how its rows map onto
question records *in the hub's own schema* (so a local file with the same columns works offline), how
the gold answer is stored, and how answers are read and compared (answer type, extraction mode,
tolerance). :func:`benchmark_record` turns one hub row into the plain record that
:func:`reasoning.questions.record_from_dict` validates.

Gold formats (``gold``):

- ``gsm8k``: ``"<rationale> #### 72"`` (the rationale becomes the exemplar's chain of thought);
- ``boxed``: a solution whose last ``\\boxed{}`` is the answer (MATH);
- ``plain``: the answer itself (a number, a yes/no, or one option's text, as ECQA gives it);
- ``index``: a 0-based option index (MMLU);
- ``label``: an option label such as ARC's ``answerKey``, looked up in the choices' ``label`` list
  (ARC uses ``1``-``4`` for some questions), else read as a letter;
- ``bool``: ``true``/``false`` (StrategyQA) read as yes/no.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoning.answers import ANSWER_TYPES, EXTRACTION_MODES
from reasoning.math_answers import last_boxed
from reasoning.questions import ReasoningDataError, ReasoningRecord, record_from_dict
from utils.errors import ConfigError, DataError
from utils.record_files import Record, read_records

TASK_DIR = Path(__file__).resolve().parents[1] / "conf" / "task"
GOLD_FORMATS = ("gsm8k", "boxed", "plain", "index", "label", "bool")
#: How each answer type is compared (reasoning.answers.answers_match).
COMPARISONS = {
    "number": "numeric",
    "math": "math_verify",
    "choice": "option",
    "yesno": "exact",
    "text": "exact",
}


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark: where its questions are, its hub schema, and how its answers are scored."""

    name: str
    hub: str
    configs: tuple[str | None, ...]
    split: str
    fewshot_split: str | None
    question: tuple[str, ...]
    answer: str
    gold: str
    choices: tuple[str, ...] = ()
    id: str | None = None
    rationale: str | None = None
    answer_type: str = "number"
    extraction: str = "auto"
    comparison: str = "numeric"
    tolerance: float | None = None
    description: str = ""
    max_new_tokens: int = 512

    @classmethod
    def from_dict(cls, node: Mapping[str, Any], where: str) -> BenchmarkSpec:
        """Validate a ``task.benchmark`` node; ``ConfigError`` lists every problem (``where`` prefixes them)."""
        node = dict(node)
        hub, fields = dict(node.get("hub") or {}), dict(node.get("fields") or {})
        problems = [f"{where}.{k} is required" for k in ("name", "gold", "answer_type") if not node.get(k)]
        problems += [f"{where}.hub.{k} is required" for k in ("path", "split") if not hub.get(k)]
        problems += [f"{where}.fields.{k} is required" for k in ("question", "answer") if not fields.get(k)]
        if node.get("gold") and node["gold"] not in GOLD_FORMATS:
            problems.append(f"{where}.gold={node['gold']!r} must be one of {list(GOLD_FORMATS)}")
        answer_type = node.get("answer_type")
        if answer_type and answer_type not in ANSWER_TYPES:
            problems.append(f"{where}.answer_type={answer_type!r} must be one of {list(ANSWER_TYPES)}")
        comparison = node.get("comparison") or COMPARISONS.get(answer_type or "", "exact")
        if answer_type in COMPARISONS and comparison != COMPARISONS[answer_type]:
            problems.append(
                f"{where}.comparison={comparison!r}: answer_type {answer_type!r} is compared by "
                f"{COMPARISONS[answer_type]!r}"
            )
        if node.get("extraction", "auto") not in EXTRACTION_MODES:
            problems.append(f"{where}.extraction must be one of {list(EXTRACTION_MODES)}")
        if answer_type == "choice" and not fields.get("choices"):
            problems.append(f"{where}.fields.choices is required for a multiple-choice benchmark")
        if problems:
            raise ConfigError(problems)
        configs = hub.get("configs")
        return cls(
            name=str(node["name"]),
            hub=str(hub["path"]),
            configs=tuple(configs) if configs else (None,),
            split=str(hub["split"]),
            fewshot_split=hub.get("fewshot_split"),
            question=_columns(fields["question"]),
            answer=str(fields["answer"]),
            gold=str(node["gold"]),
            choices=_columns(fields.get("choices")),
            id=fields.get("id"),
            rationale=fields.get("rationale"),
            answer_type=str(answer_type),
            extraction=str(node.get("extraction", "auto")),
            comparison=comparison,
            tolerance=node.get("tolerance"),
            description=str(node.get("description") or ""),
            max_new_tokens=int(node.get("max_new_tokens") or 512),
        )


def _columns(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def registered_benchmarks(task_dir: Path = TASK_DIR) -> list[str]:
    """Names of the ``conf/task/*.yaml`` files that define a benchmark."""
    from omegaconf import OmegaConf

    return sorted(
        p.stem for p in task_dir.glob("*.yaml") if OmegaConf.select(OmegaConf.load(p), "task.benchmark")
    )


def benchmark_spec(name: str | Mapping[str, Any], task_dir: Path = TASK_DIR) -> BenchmarkSpec:
    """The spec of a registered benchmark by name (its YAML's ``task.benchmark``), or of a given node."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(name, (Mapping, DictConfig)):
        node = OmegaConf.to_container(name, resolve=True) if isinstance(name, DictConfig) else name
        return BenchmarkSpec.from_dict(node, "task.benchmark")
    path = task_dir / f"{name}.yaml"
    node = OmegaConf.select(OmegaConf.load(path), "task.benchmark") if path.is_file() else None
    if node is None:
        known = ", ".join(registered_benchmarks(task_dir))
        raise ConfigError([f"task.benchmarks: {name!r} is not a registered benchmark (known: {known})"])
    return BenchmarkSpec.from_dict(OmegaConf.to_container(node, resolve=True), f"conf/task/{name}.yaml")


def _field(row: Mapping[str, Any], column: str, where: str) -> Any:
    if column not in row or row[column] is None:
        raise DataError(f"{where}: missing column {column!r} (columns: {sorted(row)})")
    return row[column]


def _choices(row: Mapping[str, Any], spec: BenchmarkSpec, where: str) -> tuple[list[str], list[str]]:
    """``(option texts, option labels)``: one list column, an ARC-style ``{"text", "label"}`` column, or
    one column per option (ECQA's ``q_op1`` ... ``q_op5``)."""
    if len(spec.choices) > 1:
        texts = [str(_field(row, c, where)) for c in spec.choices]
        return texts, list(string.ascii_uppercase[: len(texts)])
    value = _field(row, spec.choices[0], where)
    if isinstance(value, Mapping):
        texts = [str(t) for t in value.get("text") or []]
        labels = [str(t) for t in value.get("label") or []] or list(string.ascii_uppercase[: len(texts)])
        return texts, labels
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value], list(string.ascii_uppercase[: len(value)])
    raise DataError(f"{where}: column {spec.choices[0]!r} must be a list of options or {{text, label}}")


def _gold(raw: Any, spec: BenchmarkSpec, labels: Sequence[str], where: str) -> tuple[str, str]:
    """``(answer, rationale)`` in the plain record's terms, from the hub's answer column."""
    if spec.gold == "boxed":
        boxed = last_boxed(str(raw))
        if boxed is None:
            raise DataError(f"{where}: column {spec.answer!r} has no \\boxed{{}} answer")
        return boxed, str(raw).strip()
    if spec.gold == "index":
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < len(labels):
            raise DataError(
                f"{where}: column {spec.answer!r}={raw!r} is not an option index 0..{len(labels) - 1}"
            )
        return string.ascii_uppercase[raw], ""
    if spec.gold == "label":
        key = str(raw).strip()
        if key in labels:
            return string.ascii_uppercase[labels.index(key)], ""
        return key, ""
    if spec.gold == "bool":
        if not isinstance(raw, bool) and str(raw).lower() not in ("true", "false"):
            raise DataError(f"{where}: column {spec.answer!r}={raw!r} is not true/false")
        return ("yes" if raw is True or str(raw).lower() == "true" else "no"), ""
    return str(raw), ""  # gsm8k ("... #### N", split later) and plain


def benchmark_record(
    row: Mapping[str, Any], spec: BenchmarkSpec, where: str, line: int, split: str | None = None
) -> ReasoningRecord:
    """One hub row (in the benchmark's own schema) as a validated :class:`ReasoningRecord`; its id is
    ``<benchmark>/<split>/<the row's id, else its line>``."""
    question = " ".join(str(_field(row, c, where)).strip() for c in spec.question)
    texts, labels = _choices(row, spec, where) if spec.choices else ([], [])
    answer, rationale = _gold(_field(row, spec.answer, where), spec, labels, where)
    if spec.rationale and row.get(spec.rationale):
        rationale = str(row[spec.rationale]).strip()
    obj: dict[str, Any] = {
        "question": question,
        "answer": answer,
        "answer_type": spec.answer_type,
        "task": spec.name,
        "rationale": rationale,
        "tolerance": spec.tolerance,
    }
    if texts:
        obj["choices"] = texts
    row_id = row.get(spec.id) if spec.id else None
    obj["id"] = f"{spec.name}/{split or spec.split}/{row_id if row_id is not None else line}"
    try:
        return record_from_dict(obj, where, obj["id"], spec.name)
    except ReasoningDataError as e:
        raise DataError(str(e)) from None


def _hub_rows(spec: BenchmarkSpec, split: str) -> list[Record]:
    """Rows of every config of the benchmark from the hub (the only place this module goes online)."""
    import datasets

    out: list[Record] = []
    for config in spec.configs:
        source = f"{spec.hub}/{config}/{split}" if config else f"{spec.hub}/{split}"
        try:
            rows = datasets.load_dataset(spec.hub, config, split=split).to_list()
        except Exception as e:  # noqa: BLE001 - any hub failure becomes one clear line
            raise DataError(
                f"{source}: could not load the {spec.name} benchmark ({type(e).__name__}: {e}); offline, "
                f"pass a local file in the same schema with data.path=<file>"
            ) from None
        out += [Record(r, source, i) for i, r in enumerate(rows, start=1)]
    return out


def load_benchmark(
    spec: BenchmarkSpec, path: str | None = None, split: str | None = None, limit: int | None = None
) -> list[ReasoningRecord]:
    """The benchmark's questions from ``path`` (a local file in the hub schema) or the hub.

    Ids are ``<benchmark>/<split>/<the row's id or line>`` and must be unique.
    """
    split = split or spec.split
    raws = read_records(path, split=split) if path else _hub_rows(spec, split)
    records: list[ReasoningRecord] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(raws, start=1):
        line = raw.line if path else i
        rec = benchmark_record(raw.data, spec, raw.location, line, split)
        if rec.id in seen:
            raise DataError(f"{raw.location}: duplicate id {rec.id!r} (first at {seen[rec.id]})")
        seen[rec.id] = raw.location
        records.append(rec)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise DataError(f"{path or spec.hub}: the {spec.name} benchmark has no questions")
    return records
