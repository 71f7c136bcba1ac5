"""Reasoning questions for evaluation: files or HF datasets -> validated records -> rank shards.

Records are ``{"question", "answer"}`` with GSM8K's ``#### N`` understood and optional ``choices``
(see :mod:`reasoning.questions`). Other column names (an HF dataset's ``problem``/``solution``,
say) are mapped with ``fields``. :class:`ReasoningQuestionDataModule` feeds ``trainer.predict`` in
``eval.py``: every rank gets a strided shard of the questions, in batches of ``batch_size`` questions
(the unit of work between sample-cache appends), as the Self-Agreement evaluation (arXiv 2311.08154)
is spread over devices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
from torch.utils.data import DataLoader

from reasoning.questions import ReasoningDataError, ReasoningRecord, record_from_dict
from utils.errors import ConfigError, DataError
from utils.record_files import Record, read_records

#: Record fields and the config key that renames each (``data.fields.<name>``).
DEFAULT_FIELDS = {
    "question": "question",
    "answer": "answer",
    "choices": "choices",
    "task": "task",
    "id": "id",
}
REQUIRED_FIELDS = ("question", "answer")


def check_fields(fields: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """``DEFAULT_FIELDS`` updated with ``fields``; an unknown name or a null required one is an error."""
    merged: dict[str, str | None] = dict(DEFAULT_FIELDS)
    problems = []
    for name, column in (fields or {}).items():
        if name not in DEFAULT_FIELDS:
            problems.append(f"data.fields.{name} is not a record field (known: {', '.join(DEFAULT_FIELDS)})")
        elif column is None and name in REQUIRED_FIELDS:
            problems.append(f"data.fields.{name} must name a column")
        else:
            merged[name] = column
    if problems:
        raise ConfigError(problems)
    return merged


def _choices(value: Any) -> Any:
    """HF multiple-choice layouts: a list of options, or ARC's ``{"text": [...], "label": [...]}``."""
    if isinstance(value, Mapping) and "text" in value:
        return list(value["text"])
    return value


def to_reasoning_record(
    rec: Record, fields: Mapping[str, str | None], default_task: str | None = None
) -> ReasoningRecord:
    """Validate one raw record (columns renamed by ``fields``); errors name the record and the fix."""
    data = rec.data
    for name in REQUIRED_FIELDS:
        column = fields[name]
        if column not in data or data[column] is None:
            hint = f"; or set data.fields.{name}=<column>" if column == DEFAULT_FIELDS[name] else ""
            raise DataError(
                f"{rec.location}: missing field '{column}' (keys: {sorted(data)}); every question needs its "
                f"{'gold answer' if name == 'answer' else 'text'} (GSM8K-style 'rationale #### 42' is "
                f"accepted){hint}"
            )
    obj: dict[str, Any] = {}
    for name, column in fields.items():
        if column is not None and data.get(column) is not None:
            obj[name] = _choices(data[column]) if name == "choices" else data[column]
    for key in ("answer_type", "rationale"):
        if key in data and key not in obj:
            obj[key] = data[key]
    stem = Path(rec.source).stem or rec.source.replace("/", "_")
    try:
        return record_from_dict(obj, rec.location, f"{stem}-{rec.line}", str(default_task or stem))
    except ReasoningDataError as e:
        raise DataError(str(e)) from None


def load_questions(
    path: str,
    split: str = "test",
    subset: str | None = None,
    fields: Mapping[str, str | None] | None = None,
    default_task: str | None = None,
    limit: int | None = None,
) -> list[ReasoningRecord]:
    """Questions from a ``.jsonl``/``.json``/``.parquet`` file, a ``save_to_disk`` folder, or an HF dataset
    name (``subset`` is its config name, e.g. GSM8K's ``main``). Ids must be unique."""
    mapping = check_fields(fields)
    if subset is not None:
        raws = _hub_records(path, subset, split)
    else:
        raws = read_records(path, split=split)
    records: list[ReasoningRecord] = []
    seen: dict[str, str] = {}
    for raw in raws:
        rec = to_reasoning_record(raw, mapping, default_task)
        if rec.id in seen:
            raise DataError(f"{raw.location}: duplicate id {rec.id!r} (first at {seen[rec.id]})")
        seen[rec.id] = raw.location
        records.append(rec)
        if limit is not None and len(records) >= limit:
            break
    return records


def _hub_records(name: str, subset: str, split: str) -> list[Record]:
    import datasets

    try:
        rows = datasets.load_dataset(name, subset, split=split).to_list()
    except Exception as e:  # noqa: BLE001 - any hub failure becomes one clear line
        raise DataError(
            f"{name} ({subset}, {split}): could not load dataset ({type(e).__name__}: {e})"
        ) from None
    if not rows:
        raise DataError(f"{name} ({subset}, {split}): the dataset holds no records")
    return [Record(r, f"{name}/{subset}/{split}", i) for i, r in enumerate(rows, start=1)]


def shard(items: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """Rank ``rank``'s strided share of ``items`` (every ``world_size``-th item from ``rank``), so easy and
    hard questions spread evenly and shards differ in size by at most one."""
    return list(items[rank::world_size])


class ReasoningQuestionDataModule(L.LightningDataModule):
    """Questions for ``trainer.predict``: batches are lists of :class:`ReasoningRecord`.

    Args:
        path, split, subset, fields, default_task, limit: see :func:`load_questions`.
        batch_size: questions per predict step (generation inside a step is batched by the backend).
        fewshot_path: solved records to draw exemplars from when ``prompt.num_fewshot > 0``.
    """

    batch_kind: ClassVar[str] = "questions"  # utils.batch_kinds

    def __init__(
        self,
        path: str,
        split: str = "test",
        subset: str | None = None,
        fields: Mapping[str, str | None] | None = None,
        default_task: str | None = None,
        limit: int | None = None,
        batch_size: int = 16,
        fewshot_path: str | None = None,
    ) -> None:
        super().__init__()
        problems = []
        if not isinstance(batch_size, int) or batch_size < 1:
            problems.append(f"data.batch_size={batch_size} must be a positive integer")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            problems.append(f"data.limit={limit} must be a positive integer (or null for all questions)")
        if problems:
            raise ConfigError(problems)
        self.path, self.split, self.subset = str(path), split, subset
        self.fields = dict(fields or {})
        self.default_task, self.limit, self.batch_size = default_task, limit, batch_size
        self.fewshot_path = fewshot_path
        self.records: list[ReasoningRecord] = []
        self.fewshot_pool: list[ReasoningRecord] = []

    def setup(self, stage: str | None = None) -> None:
        if self.records:
            return
        self.records = load_questions(
            self.path, self.split, self.subset, self.fields, self.default_task, self.limit
        )
        if self.fewshot_path:
            self.fewshot_pool = load_questions(self.fewshot_path, split="train", fields=self.fields)

    @property
    def question_ids(self) -> list[str]:
        return [r.id for r in self.records]

    def rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def shard_records(self) -> list[ReasoningRecord]:
        """This rank's questions."""
        return shard(self.records, *self.rank_world())

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        return batch  # questions, not tensors: the backend moves its own inputs

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.shard_records(), batch_size=self.batch_size, shuffle=False, collate_fn=list)
