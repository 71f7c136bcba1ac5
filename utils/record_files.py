"""Read raw records from JSONL / JSON / Parquet files, ``save_to_disk`` folders or HF dataset names.

Every record comes back with its location (``file:line``) so later validation errors can name it.
Nothing here knows about chat or preference formats; see ``datamodules/chat_format.py`` and
``datamodules/preference_format.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.data_paths import expand_pattern
from utils.errors import DataError
from utils.text_files import iter_json_objects, read_text

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Record:
    """One raw record and where it came from (``source`` is a path or dataset name; ``line`` 1-based)."""

    data: dict[str, Any]
    source: str
    line: int

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"


def read_records(
    path: str | Path, split: str = "train", hf_name: str | None = None, key: str = "data.path"
) -> list[Record]:
    """Load records from a file, a ``datasets.save_to_disk`` folder or an HF hub dataset name.

    Raises ``DataError`` naming the file (and line, for JSONL) on a missing file or malformed JSON;
    ``key`` is the config key the path came from (named in the not-found message). A glob pattern
    reads every file it matches, in sorted order (each record keeps its own ``file:line``).
    """
    files = expand_pattern(path, key)
    if files is not None:
        return [r for f in files for r in read_records(f, split, hf_name, key)]
    p = Path(path)
    if p.is_file():
        if p.suffix == ".jsonl":
            return _read_jsonl(p)
        if p.suffix == ".json":
            return _read_json(p)
        if p.suffix == ".parquet":
            return _from_rows(_read_parquet(p), str(p))
        raise DataError(f"{p}: unsupported file type {p.suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")
    if p.is_dir():
        return _from_rows(_read_saved_dataset(p, split), str(p))
    looks_like_path = p.suffix in FILE_SUFFIXES or str(path).startswith((".", "/", "~"))
    if looks_like_path or hf_name is None and "/" not in str(path):
        raise DataError(f"{path}: data file not found (set {key} to an existing .jsonl/.json/.parquet file)")
    return _from_rows(_load_hub_dataset(str(path), split), str(path))


def _read_jsonl(p: Path) -> list[Record]:
    out = [Record(obj, str(p), i) for i, obj in iter_json_objects(p)]
    if not out:
        raise DataError(f"{p}: the file holds no records")
    return out


def _read_json(p: Path) -> list[Record]:
    try:
        obj = json.loads(read_text(p))
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    if isinstance(obj, dict):
        # Allow {"data": [...]} or a dict with a single list value.
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{p}: expected a JSON list of records (or an object holding one list)")
        obj = lists[0]
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise DataError(f"{p}: expected a JSON list of objects")
    return [Record(r, str(p), i) for i, r in enumerate(obj, start=1)]


def _read_parquet(p: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(p).to_pylist()


def _read_saved_dataset(p: Path, split: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError as e:
        raise DataError(f"{p}: not a dataset folder saved with datasets.save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{p}: split {split!r} not found; available: {sorted(ds)}")
        ds = ds[split]
    return ds.to_list()


def _load_hub_dataset(name: str, split: str) -> list[dict]:
    import datasets

    try:
        return datasets.load_dataset(name, split=split).to_list()
    except Exception as e:  # noqa: BLE001 - any hub failure becomes one clear line
        raise DataError(f"{name}: could not load dataset by name ({type(e).__name__}: {e})") from None


def _from_rows(rows: list[dict], source: str) -> list[Record]:
    if not rows:
        raise DataError(f"{source}: the dataset holds no records")
    return [Record(r, source, i) for i, r in enumerate(rows, start=1)]
