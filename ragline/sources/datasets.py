"""Documents from dataset files: JSON Lines (BEIR ``corpus.jsonl`` included) and Parquet, streamed record by record.

A record has an id (``_id``, else ``id``), a ``text``, an optional ``title`` and an optional ``metadata`` object;
every other field joins the metadata too. Metadata values are made Pinecone-compatible (str, int, float, bool,
list[str]): nulls are dropped, anything nested becomes a JSON string. A record that cannot be used (bad JSON,
no id, no text, an id already used in the file) becomes a ``QuarantineRecord`` and the stream goes on.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from ragline.errors import SourceError
from ragline.limits import fits_64_bits
from ragline.records import Document, Metadata, MetadataValue, QuarantineRecord, make_doc_id
from ragline.sources.base import SourceItem

if TYPE_CHECKING:
    import pyarrow.parquet as pq

REASON_MALFORMED_JSON = "malformed JSON"
REASON_NOT_AN_OBJECT = "not a JSON object"
REASON_MISSING_ID = "missing id"
REASON_MISSING_TEXT = "missing or empty text"
REASON_DUPLICATE_ID = "duplicate id"
REASON_TOO_LARGE = "record too large"
REASON_NUL = "NUL characters in text"

BEIR_CORPUS_FILE = "corpus.jsonl"
MAX_LINE_FACTOR = 6
"""A JSON line may be this many times ``max_record_bytes`` (``\\uXXXX`` escapes take 6 bytes per character);
a longer line is skipped without being held in memory, and quarantined."""
_RECORD_FIELDS = frozenset({"_id", "id", "text", "title", "metadata"})


class JsonlSource:
    """One JSON object per line. ``name`` defaults to the file stem, or the folder name for a BEIR corpus.jsonl."""

    def __init__(self, path: Path, name: str | None = None, max_record_bytes: int = 10_000_000) -> None:
        self.path = Path(path)
        self.name = name or default_dataset_name(self.path)
        self.max_record_bytes = max_record_bytes

    def items(self) -> Iterator[SourceItem]:
        """Documents and quarantine records in line order; raises ``SourceError`` if the file cannot be opened."""
        records = _RecordConverter(self.name, self.path, "jsonl", self.max_record_bytes)
        limit = MAX_LINE_FACTOR * self.max_record_bytes
        with _open_binary(self.path) as handle:
            for number, line in enumerate(_bounded_lines(handle, limit), start=1):
                if line is None:
                    yield records.reject(REASON_TOO_LARGE, f"line {number}", f"line over {limit} bytes")
                elif line.strip():
                    yield self._line_item(records, line, number)

    def _line_item(self, records: _RecordConverter, line: bytes, number: int) -> SourceItem:
        where = f"line {number}"
        try:
            record = json.loads(line.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            return records.reject(REASON_MALFORMED_JSON, where, f"not valid UTF-8 ({exc.reason})")
        except json.JSONDecodeError as exc:
            return records.reject(REASON_MALFORMED_JSON, where, f"{exc.msg} at column {exc.colno}")
        except RecursionError:
            return records.reject(REASON_MALFORMED_JSON, where, "nested too deeply")
        if _LONE_SURROGATE_ESCAPE.search(line) and _holds_lone_surrogate(record):
            return records.reject(
                REASON_MALFORMED_JSON, where, "a \\ud800-\\udfff escape without its pair (not Unicode)"
            )
        if not isinstance(record, dict):
            return records.reject(REASON_NOT_AN_OBJECT, where, f"a JSON {type(record).__name__}")
        return records.convert(record, where)


class ParquetSource:
    """One record per row (columns as for JSONL), read with pyarrow ``iter_batches`` so rows stream."""

    def __init__(
        self, path: Path, name: str | None = None, max_record_bytes: int = 10_000_000, batch_size: int = 1024
    ) -> None:
        self.path = Path(path)
        self.name = name or default_dataset_name(self.path)
        self.max_record_bytes = max_record_bytes
        self.batch_size = batch_size

    def items(self) -> Iterator[SourceItem]:
        """Documents and quarantine records in row order; ``SourceError`` if unreadable or without id/text columns."""
        parquet_file = self._open()
        records = _RecordConverter(self.name, self.path, "parquet", self.max_record_bytes)
        row_number = 0
        for batch in parquet_file.iter_batches(batch_size=self.batch_size):
            for row in batch.to_pylist():
                row_number += 1
                yield records.convert(row, f"row {row_number}")

    def _open(self) -> pq.ParquetFile:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet_file = pq.ParquetFile(self.path)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"cannot read parquet file {self.path}: {exc}") from exc
        columns = set(parquet_file.schema_arrow.names)
        if "text" not in columns or not columns & {"_id", "id"}:
            raise SourceError(f"parquet file {self.path} needs a 'text' column and an '_id' or 'id' column")
        return parquet_file


def default_dataset_name(path: Path) -> str:
    """The file stem, or the parent folder's name for a BEIR ``corpus.jsonl`` (…/cranfield/corpus.jsonl → cranfield)."""
    if path.name == BEIR_CORPUS_FILE:
        return path.absolute().parent.name
    return path.stem


def _bounded_lines(handle: IO[bytes], limit: int) -> Iterator[bytes | None]:
    """The file's lines; None for a line over ``limit`` bytes, which is read past in ``limit``-sized pieces."""
    while line := handle.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = handle.readline(limit + 1)
        yield None


def _open_binary(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        raise SourceError(f"cannot open dataset file {path}: {exc}") from exc


class _RecordConverter:
    """Turns dataset records into documents, remembering where each id was first used so duplicates are quarantined."""

    def __init__(self, source: str, path: Path, file_format: str, max_record_bytes: int) -> None:
        self.source = source
        self.file_uri = path.resolve().as_uri()
        self.file_format = file_format
        self.max_record_bytes = max_record_bytes
        self.first_use: dict[str, str] = {}

    def convert(self, record: dict[str, Any], where: str) -> SourceItem:
        """A document, or a quarantine record saying why not; ``where`` locates the record (``line 3``, ``row 7``)."""
        record_id = _record_id(record)
        if record_id is None:
            return self.reject(REASON_MISSING_ID, where, "no non-empty '_id' or 'id'")
        doc_id = make_doc_id(self.source, record_id)
        uri = f"{self.file_uri}#{quote(record_id, safe='')}"
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            return self.reject(REASON_MISSING_TEXT, where, f"'text' is {_describe(text)}", doc_id, uri)
        if "\x00" in text or "\x00" in str(record.get("title") or ""):
            return self.reject(REASON_NUL, where, "'text' or 'title' holds NUL characters (binary data)", doc_id, uri)
        if len(text.encode("utf-8")) > self.max_record_bytes:
            return self.reject(REASON_TOO_LARGE, where, f"text over {self.max_record_bytes} bytes", doc_id, uri)
        if record_id in self.first_use:
            earlier = self.first_use[record_id]
            return self.reject(REASON_DUPLICATE_ID, where, f"id {record_id!r} already used at {earlier}", doc_id, uri)
        self.first_use[record_id] = where
        return self._document(record, doc_id, uri, text)

    def reject(
        self, reason: str, where: str, detail: str, doc_id: str | None = None, uri: str | None = None
    ) -> QuarantineRecord:
        """A quarantine record whose detail starts with ``where``; without an id its uri points there (``#line=3``)."""
        fallback_uri = f"{self.file_uri}#{where.replace(' ', '=')}"
        return QuarantineRecord(
            source=self.source, uri=uri or fallback_uri, reason=reason, doc_id=doc_id, detail=f"{where}: {detail}"
        )

    def _document(self, record: dict[str, Any], doc_id: str, uri: str, text: str) -> Document:
        title = record.get("title")
        title = "" if title is None else str(title)
        metadata = self._metadata(record)
        return Document(
            doc_id=doc_id,
            source=self.source,
            uri=uri,
            title=title,
            text=text,
            content_hash=Document.hash_content(title, text, metadata),
            metadata=metadata,
            kind="text",
        )

    def _metadata(self, record: dict[str, Any]) -> Metadata:
        """Extra fields, then the ``metadata`` object's keys, then ``source`` and ``format`` (later ones win)."""
        fields = {key: value for key, value in record.items() if key not in _RECORD_FIELDS}
        nested = record.get("metadata")
        if isinstance(nested, dict):
            fields.update(nested)
        elif nested is not None:
            fields["metadata"] = nested
        fields.update(source=self.source, format=self.file_format)
        return {key: value for key, raw in fields.items() if (value := metadata_value(raw)) is not None}


def metadata_value(value: Any) -> MetadataValue | None:
    """A Pinecone-compatible value: scalars and lists of strings kept, None/NaN dropped, dates as ISO text, integers
    wider than 64 bits (which no store takes) as decimal text, else JSON."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not fits_64_bits(value):
        return str(value)
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


_LONE_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A surrogate escape in a JSON line: only then can ``json.loads`` have returned a string UTF-8 cannot encode."""


def _holds_lone_surrogate(record: object) -> bool:
    """Whether a parsed JSON value holds a lone surrogate (a valid pair decodes to one character)."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _record_id(record: dict[str, Any]) -> str | None:
    """``_id`` (else ``id``) as text: a non-empty string or an integer; anything else counts as missing."""
    raw = record.get("_id")
    if raw is None:
        raw = record.get("id")
    if isinstance(raw, bool) or not isinstance(raw, (str, int)) or not str(raw).strip():
        return None
    return str(raw)


def _describe(value: Any) -> str:
    if value is None:
        return "missing"
    return "empty" if isinstance(value, str) else f"a {type(value).__name__}, not a string"
