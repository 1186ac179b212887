"""The records that flow through the pipeline, and the one place their ids and hashes are built."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Union
from urllib.parse import quote

MetadataValue = Union[str, int, float, bool, list[str]]
Metadata = dict[str, MetadataValue]


def sha256_hex(data: str | bytes) -> str:
    """Hex SHA-256 of text (UTF-8) or bytes."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def stable_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces) so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def index_metadata(text: str, metadata: Metadata) -> Metadata:
    """The metadata a chunk carries in the index (dense and sparse): its own metadata plus its text (for retrieval)."""
    return {**metadata, "text": text}


def make_doc_id(source: str, relative_path_or_id: str) -> str:
    """Document id: ``source/relative/path`` (POSIX separators) or ``source/<dataset _id>``.

    Characters outside printable ASCII are percent-encoded (UTF-8), since Pinecone accepts only ASCII ids:
    ``docs/café.md`` becomes ``docs/caf%C3%A9.md``, the same on every run and every backend.
    """
    rel = relative_path_or_id.replace("\\", "/").lstrip("/")
    return "".join(c if " " <= c <= "~" else quote(c, safe="") for c in f"{source}/{rel}")


def make_chunk_id(doc_id: str, position: int) -> str:
    """Chunk id ``doc_id#n``: Pinecone's ``list(prefix=doc_id + '#')`` finds a document's chunks."""
    return f"{doc_id}#{position}"


def chunk_id_prefix(doc_id: str) -> str:
    """The prefix every chunk id of ``doc_id`` starts with."""
    return f"{doc_id}#"


@dataclass(frozen=True)
class Document:
    """One loaded document. ``content_hash`` covers title, text and metadata."""

    doc_id: str
    source: str
    uri: str
    title: str
    text: str
    content_hash: str
    modified_at: float | None = None
    metadata: Metadata = field(default_factory=dict)
    kind: str = "text"  # "text" | "markdown" | "html": tells the chunker which structure to use

    @staticmethod
    def hash_content(title: str, text: str, metadata: Metadata) -> str:
        """The content hash of a document's title, text and metadata."""
        return sha256_hex(stable_json({"title": title, "text": text, "metadata": metadata}))


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, ready to embed. ``text_hash`` is the embedding cache key's text part."""

    chunk_id: str
    doc_id: str
    position: int
    text: str
    text_hash: str
    token_count: int
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True)
class QuarantineRecord:
    """An input that could not be used, and why. The run goes on without it."""

    source: str
    uri: str
    reason: str
    doc_id: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class NearDuplicate:
    """A document that nearly duplicates an indexed one (estimated Jaccard similarity of word shingles).

    ``action`` is ``tagged`` (indexed with ``near_duplicate_of`` metadata) or ``skipped`` (not indexed);
    ``duplicate_of_hash`` is the content hash of the original it was compared with.
    """

    doc_id: str
    duplicate_of: str
    similarity: float
    action: str
    duplicate_of_hash: str
