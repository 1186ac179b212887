"""Where documents come from: folders of files and dataset files, behind the ``Source`` protocol."""

from __future__ import annotations

from pathlib import Path

from ragline.errors import SourceError
from ragline.sources.base import Source, SourceItem
from ragline.sources.datasets import BEIR_CORPUS_FILE, JsonlSource, ParquetSource
from ragline.sources.files import DirectorySource

__all__ = ["DirectorySource", "JsonlSource", "ParquetSource", "Source", "SourceItem", "open_source"]


def open_source(path: Path, name: str | None = None, max_file_bytes: int = 10_000_000) -> Source:
    """The source for ``path``: a BEIR folder (has corpus.jsonl), any other folder, a .jsonl or a .parquet file.

    ``max_file_bytes`` caps each file of a folder, and each record's text in a dataset file.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"source path does not exist: {path}")
    if path.is_dir():
        corpus = path / BEIR_CORPUS_FILE
        if corpus.is_file():
            return JsonlSource(corpus, name=name, max_record_bytes=max_file_bytes)
        return DirectorySource(path, name=name, max_file_bytes=max_file_bytes)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return JsonlSource(path, name=name, max_record_bytes=max_file_bytes)
    if suffix == ".parquet":
        return ParquetSource(path, name=name, max_record_bytes=max_file_bytes)
    raise SourceError(f"cannot read {path}: expected a folder, a .jsonl file or a .parquet file")
