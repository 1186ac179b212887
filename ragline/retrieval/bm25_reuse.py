"""A rebuild that tokenizes only what changed: the term counts of a previous build, reused for its unchanged chunks.

A build (``ragline.retrieval.bm25_build``) keeps each chunk's term counts beside its score arrays, document by
document (``rows.*`` files), with a key per chunk: a hash of its text hash and title, what it was tokenized from.
The next build of the namespace reads the live chunks without their texts, takes the counts of every chunk whose id
and key the previous build holds, and fetches and tokenizes only the others. Scores are then computed over the whole
namespace as in a full build, so they are the same (BM25's idf and average length change with every chunk); only
the numbering of the terms may differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragline.recordstore import KeywordRow
from ragline.retrieval.bm25_build import COUNTS, DISTINCT, KEYS, LENGTHS, TERMS, Rows
from ragline.retrieval.bm25_tokens import TOKENIZER_VERSION

log = logging.getLogger(__name__)

ROWS_FORMAT = 2
"""The rows files' layout; a manifest's ``rows`` names it with the tokenizer and the files' digests."""
_ROW_FILES = (TERMS, COUNTS, DISTINCT, LENGTHS, KEYS)
_READ = 1 << 22
"""Bytes read at a time when digesting a rows file."""


def rows_manifest(folder: Path) -> dict[str, Any]:
    """What a build's manifest says of its rows (``ROWS_FORMAT``, the tokenizer, each file's digest): a later build
    reuses them only if all three still hold, so rows from another tokenizer or damaged on disk (a crash before the
    page cache reached it) are tokenized again instead."""
    return {"format": ROWS_FORMAT, "tokenizer": tokenizer_identity(), "blake2b": _digests(folder)}


def tokenizer_identity() -> dict[str, str]:
    """What the terms of a text depend on besides ``BM25Params``: the tokenizer's code, the stopword lists and
    stemmers (bm25s, PyStemmer) and Python's Unicode tables (``\\w``)."""
    from importlib.metadata import version

    return {
        "ragline": str(TOKENIZER_VERSION),
        "bm25s": version("bm25s"),
        "PyStemmer": version("PyStemmer"),
        "unicode": unicodedata.unidata_version,
    }


def _digests(folder: Path) -> dict[str, str]:
    digests = {}
    for name in _ROW_FILES:
        digest = hashlib.blake2b(digest_size=16)
        with (folder / name).open("rb") as file:
            while block := file.read(_READ):
                digest.update(block)
        digests[name] = digest.hexdigest()
    return digests


def row_keys(rows: Sequence[KeywordRow]) -> np.ndarray:
    """Each row's key: 8 bytes of a hash of its text hash and title (what its terms are made of), as uint64."""
    digests = (hashlib.blake2b(f"{row.text_hash}\x00{row.title}".encode(), digest_size=8).digest() for row in rows)
    return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)


class PreviousRows:
    """The chunks of a previous build and their term counts (memory-mapped: a rebuild reads only what it reuses)."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self._at = {chunk_id: n for n, chunk_id in enumerate(manifest["chunk_ids"])}
        self._keys = np.load(path / KEYS)
        self._distinct = np.load(path / DISTINCT).astype(np.int64)
        self._lengths = np.load(path / LENGTHS)
        self._starts = np.cumsum(self._distinct) - self._distinct
        entries = int(self._distinct.sum())
        self._terms = np.memmap(path / TERMS, dtype=np.int32, mode="r", shape=(entries,)) if entries else None
        self._counts = np.memmap(path / COUNTS, dtype=np.float32, mode="r", shape=(entries,)) if entries else None
        vocabulary: dict[str, int] = json.loads((path / "vocab.index.json").read_text(encoding="utf-8"))
        vocabulary.pop("", None)  # bm25s's token for queries without terms, numbered after every real one
        self.vocabulary = [""] * len(vocabulary)
        """Its terms in id order: a build numbering its terms so first can take its rows as they are."""
        for term, n in vocabulary.items():
            self.vocabulary[n] = term
        if not len(self._keys) == len(self._distinct) == len(self._lengths) == len(self._at):
            raise ValueError("rows files disagree with the manifest")

    def find(self, rows: Sequence[KeywordRow], keys: np.ndarray) -> np.ndarray:
        """For each row, the previous build's chunk with the same id and key, or -1."""
        found = np.fromiter((self._at.get(row.chunk_id, -1) for row in rows), dtype=np.int64, count=len(rows))
        known = found >= 0
        known[known] = self._keys[found[known]] == keys[known]
        found[~known] = -1
        return found

    def rows(self, chunks: np.ndarray) -> Rows:
        """The rows of the previous build's ``chunks``, in its term ids (``vocabulary``)."""
        distinct = self._distinct[chunks]
        lengths = self._lengths[chunks].astype(np.int64)
        total = int(distinct.sum())
        if total == 0 or self._terms is None or self._counts is None:
            return Rows(np.zeros(0, np.int32), np.zeros(0, np.float32), distinct, lengths)
        ends = np.cumsum(distinct)
        at = np.repeat(self._starts[chunks] - (ends - distinct), distinct) + np.arange(total)
        return Rows(np.asarray(self._terms[at]), np.asarray(self._counts[at]), distinct, lengths)


def previous_rows(folder: Path, params: dict[str, Any]) -> PreviousRows | None:
    """The newest build under ``folder`` with ``params`` and rows this build can reuse (same format and tokenizer,
    files as digested), or None: the rebuild tokenizes every chunk."""
    builds, tokenizer = [], tokenizer_identity()
    for child in folder.iterdir() if folder.is_dir() else ():
        try:
            manifest = json.loads((child / "manifest.json").read_text(encoding="utf-8"))
            rows = manifest.get("rows")
            if (
                not child.name.startswith(".")
                and manifest["params"] == params
                and isinstance(rows, dict)
                and rows.get("format") == ROWS_FORMAT
                and rows.get("tokenizer") == tokenizer
            ):
                builds.append((child.stat().st_mtime, child, manifest))
        except (OSError, ValueError, KeyError, TypeError):  # not an index, being removed, or from an older release
            continue
    for _, path, manifest in sorted(builds, key=lambda build: build[0], reverse=True):
        try:
            if _digests(path) != manifest["rows"]["blake2b"]:
                raise ValueError("rows files differ from their digests")
            return PreviousRows(path, manifest)
        except Exception as exc:  # a damaged or vanishing index is only a lost shortcut
            log.warning("bm25 index at %s cannot be reused (%s); tokenizing every chunk", path, exc)
    return None


def combine(size: int, parts: Sequence[tuple[np.ndarray, Rows]]) -> Rows:
    """The rows of a page of ``size`` texts from parts that each hold some of them: (their places in the page, their
    rows)."""
    distinct = np.zeros(size, dtype=np.int64)
    lengths = np.zeros(size, dtype=np.int64)
    for places, part in parts:
        distinct[places], lengths[places] = part.distinct, part.lengths
    owners = np.concatenate([np.repeat(places, part.distinct) for places, part in parts])
    order = np.argsort(owners, kind="stable")
    terms = np.concatenate([part.terms for _, part in parts])[order]
    counts = np.concatenate([part.counts for _, part in parts])[order]
    return Rows(terms, counts, distinct, lengths)
