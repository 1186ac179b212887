"""Pinecone bulk-import export: records written as Parquet files in the layout Pinecone imports from object storage.

Layout (Pinecone docs, "Import records"): an import folder with one sub-folder per namespace (``__default__`` for
the default namespace), each holding ``.parquet`` files with the columns ``id`` (string), ``values``
(list<float32>, the dense vector) and ``metadata`` (a JSON string). The import ignores every other file and needs
namespaces that do not exist in the index yet. Upload the folder (``aws s3 sync DIR s3://bucket/prefix/``) and
start the import with the SDK: ``pc.Index(name).start_import(uri="s3://bucket/prefix/", error_mode="abort")``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ragline.errors import ValidationFailed
from ragline.stores.base import VectorRecord

SCHEMA = pa.schema([("id", pa.string()), ("values", pa.list_(pa.float32())), ("metadata", pa.string())])
DEFAULT_NAMESPACE_FOLDER = "__default__"


def namespace_folder(root: Path, namespace: str) -> Path:
    """The folder whose files Pinecone imports into ``namespace``."""
    return Path(root) / (namespace or DEFAULT_NAMESPACE_FOLDER)


def part_path(root: Path, namespace: str, part: int) -> Path:
    """The file of one export part (a backfill partition): ``<root>/<namespace>/part-000007.parquet``."""
    return namespace_folder(root, namespace) / f"part-{part:06d}.parquet"


def records_table(records: Sequence[VectorRecord]) -> pa.Table:
    """Records as a table of Pinecone's import schema."""
    vectors = np.asarray([r.values for r in records], dtype=np.float32).reshape(len(records), -1)
    offsets = pa.array(np.arange(len(records) + 1, dtype=np.int32) * vectors.shape[1])
    values = pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel(), type=pa.float32()))
    metadata = [json.dumps(r.metadata, ensure_ascii=False, separators=(",", ":")) for r in records]
    ids = pa.array([r.id for r in records], pa.string())
    return pa.Table.from_arrays([ids, values, pa.array(metadata, pa.string())], schema=SCHEMA)


class ParquetPart:
    """Streams record batches into one hidden temporary file; ``commit`` moves it into place atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._tmp = path.with_name(f".{path.name}.tmp")  # not *.parquet: an import never picks it up
        self._writer: pq.ParquetWriter | None = None

    def write(self, records: Sequence[VectorRecord]) -> int:
        """Append a batch; returns how many records it wrote (a ``RecordWriter`` for the ingest stages)."""
        if not records:
            return 0
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, SCHEMA)
        self._writer.write_table(records_table(records))
        self.rows += len(records)
        return len(records)

    def commit(self) -> None:
        """Close and move the file into place, after checking its row count.

        A part that received no records (a partition with no document to export) writes nothing. A part that
        cannot be moved into place is dropped.
        """
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        try:
            written = pq.read_metadata(self._tmp).num_rows
            if written != self.rows:
                raise ValidationFailed(f"export file {self.path}", [f"holds {written} rows, {self.rows} were written"])
            os.replace(self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        """Drop the temporary file; an earlier committed file stays."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)


@contextmanager
def parquet_part(path: Path) -> Iterator[ParquetPart]:
    """A part committed when the block ends normally, aborted when it raises."""
    part = ParquetPart(path)
    try:
        yield part
    except BaseException:
        part.abort()
        raise
    part.commit()
