"""LMCorpusDataModule: plain text for language-model training, packed into fixed-length blocks.

Sources: ``.txt`` files (one document per line, or the whole file with ``doc_per_line=false``),
JSONL/JSON/Parquet with a text field, a ``save_to_disk`` folder or an HF dataset name. Documents are
tokenised, joined with the eos token and cut into blocks of ``block_size`` tokens (the tail that
doesn't fill a block is dropped), once, into an Arrow cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import datasets

from datamodules.base import TokenDataModule, cached_map, fingerprint, split_indices
from datamodules.collate import PadCollator
from models.tokenizer import load_tokenizer
from utils.data_paths import expand_pattern
from utils.errors import ConfigError, DataError
from utils.record_files import read_records
from utils.text_files import read_text


def read_documents(
    path: str, text_field: str = "text", doc_per_line: bool = True, split: str = "train"
) -> list[str]:
    """The documents of a text file, or the ``text_field`` of every record of a structured source."""
    files = expand_pattern(path)
    if files is not None:  # a glob: the documents of every matching file, in sorted order
        return [d for f in files for d in read_documents(str(f), text_field, doc_per_line, split)]
    p = Path(path)
    if p.suffix == ".txt":
        if not p.is_file():
            raise DataError(f"{p}: corpus file not found")
        text = read_text(p)
        docs = [ln for ln in text.splitlines() if ln.strip()] if doc_per_line else [text]
    else:
        docs = []
        for r in read_records(path, split=split):
            value = r.data.get(text_field)
            if not isinstance(value, str):
                raise DataError(f"{r.location}: no string field {text_field!r} (set data.text_field)")
            docs.append(value)
    if not docs:
        raise DataError(f"{path}: the corpus is empty")
    return docs


class LMCorpusDataModule(TokenDataModule):
    batch_kind: ClassVar[str] = "tokens"  # utils.batch_kinds

    def __init__(
        self,
        path: str,
        tokenizer: str,
        block_size: int = 256,
        text_field: str = "text",
        doc_per_line: bool = True,
        val_path: str | None = None,
        val_fraction: float = 0.05,
        split: str = "train",
        cache_dir: str | None = None,
        num_proc: int | None = None,
        trust_remote_code: bool = False,
        max_length: int | None = None,
        **loader_kwargs: Any,
    ):
        """``max_length``, when set, caps ``block_size`` (the sequence length of a packed block): the
        key every data config shares, so that ``debug=smoke``'s short sequences apply here too."""
        super().__init__(**loader_kwargs)
        if max_length is not None:
            block_size = min(block_size, max_length)
        if block_size < 2:
            raise ConfigError([f"data.block_size={block_size} must be at least 2"])
        self.path, self.val_path, self.split = path, val_path, split
        self.tokenizer_name, self.trust_remote_code = tokenizer, trust_remote_code
        self.block_size, self.text_field, self.doc_per_line = block_size, text_field, doc_per_line
        self.val_fraction, self.cache_dir, self.num_proc = val_fraction, cache_dir, num_proc
        self.tokenizer: Any = None

    def prepare_data(self) -> None:
        for path in filter(None, (self.path, self.val_path)):
            self._blocks(read_documents(path, self.text_field, self.doc_per_line, self.split), path)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        docs = read_documents(self.path, self.text_field, self.doc_per_line, self.split)
        if self.val_path:
            train_docs = docs
            val_docs = read_documents(self.val_path, self.text_field, self.doc_per_line, self.split)
        else:
            tr, va = split_indices(len(docs), self.val_fraction, self.seed)
            train_docs, val_docs = [docs[i] for i in tr], [docs[i] for i in va]
        self.train_dataset = self._blocks(train_docs, self.path)
        self.val_dataset = self._blocks(val_docs, self.val_path or self.path) if val_docs else None
        self.collate = PadCollator(self.tokenizer.pad_token_id)

    def _blocks(self, docs: list[str], source: str) -> datasets.Dataset:
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.tokenizer_name, self.trust_remote_code)
        tok, block, eos = self.tokenizer, self.block_size, self.tokenizer.eos_token_id
        key = fingerprint(docs, self.tokenizer_name, len(tok), block)

        def pack(batch: dict[str, list]) -> dict[str, list]:
            stream: list[int] = []
            for ids in tok(batch["text"], add_special_tokens=False)["input_ids"]:
                stream += ids + [eos]
            n = len(stream) // block
            chunks = [stream[i * block : (i + 1) * block] for i in range(n)]
            return {"input_ids": chunks, "labels": chunks}

        raw = datasets.Dataset.from_dict({"text": docs})
        ds = cached_map(
            raw, pack, key, self.cache_dir, "corpus", f"Packing {Path(source).name}", self.num_proc
        )
        if len(ds) == 0:
            raise DataError(f"{source}: fewer tokens than one block of {block}; lower data.block_size")
        return ds
