"""BM25 over a namespace's live chunks (bm25s), persisted under ``<home>/bm25/<namespace>/`` and kept in sync.

Each chunk is indexed as its document title followed by its text: a light title field (on Cranfield, whose
texts already begin with the title, it doubles the title's weight; on CISI the title is nowhere else). Measured,
it lifts BM25 nDCG@10 by 0.009 (Cranfield) and 0.016 (CISI).

An index is keyed by a fingerprint of the live chunk set (sorted chunk ids with their text hashes and titles) and
its BM25 parameters. ``refresh_bm25`` (ingest calls it after a commit) and every search compare the live key with the
loaded index and rebuild when they differ. Reading the live set scans the record store (seconds at a million
chunks), so a search scans it only when the namespace's last commit (as the database numbers them,
``RunJournal.last_commit``; a run open meanwhile changes no live row) is not the one the index was checked at: live
chunks change only by a commit.
Within a minute of the last check, while a cheap stamp of the SQLite record store's files (size and mtime) has not
changed, it does not even read the last commit: mtimes are coarse, and a commit in the stamp's tick goes unseen by
the stamp but not, past the minute, by that read. On PostgreSQL (no files here) every search reads the last commit:
one indexed row. The commit an index was last found in sync at is kept in its folder (``checked.json``, written
only when no commit came during the scan), so a new process (a ``ragline query``, a service replica starting) whose
namespace's last commit is that one loads it without a scan.

Layout: ``<home>/bm25/<namespace>/<key>/`` holds bm25s's arrays, ``manifest.json`` (chunk ids in index order, the
namespace's sources) and ``checked.json``. A build writes a hidden temporary folder and renames it into place, so
readers in other processes never see half an index; older keys are removed after.

Memory: the live chunks are read a page at a time, both to fingerprint them and to build
(``ragline.retrieval.bm25_build``: the score arrays are written to disk, never held whole), and an index is loaded
memory-mapped, so a query reads only its terms' columns. Held per chunk: its id (the manifest), a few bytes while
building; a build that reuses the previous one's rows also holds that build's ids with their places (about 150 MiB
at 1,000,000 chunks) and reads its rows files memory-mapped.

Hits take their text and metadata from the record store's live rows at query time; metadata filters are applied
with ``ragline.stores.filters.matches``, walking down the BM25 ranking until ``top_k`` chunks pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragline.components import Components
from ragline.config import RaglineConfig
from ragline.errors import ConfigError, StoreError
from ragline.records import Metadata
from ragline.recordstore import KeywordRow, RecordStore
from ragline.recordstore.rows import keyword_row, metadata_title
from ragline.retrieval import bm25_reuse, bm25_tokens
from ragline.retrieval.bm25_build import Rows, StreamingBM25
from ragline.retrieval.bm25_tokens import PageCounts
from ragline.retrieval.hits import Hit
from ragline.stores.base import Filter
from ragline.stores.filters import matches
from ragline.workers import WorkerPool

if TYPE_CHECKING:
    import bm25s

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CHECKED = "checked.json"
"""In an index's folder: the last commit at which it was found to hold the namespace's live chunks, and its params."""
_SAFE_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_STALE_TEMP_S = 3600.0
"""A temporary build folder older than this was left by a crashed build and is removed."""
_PAGE = 2_000
"""Live chunk rows read at a time when fingerprinting or building."""
_WORKERS_FROM = 20_000
"""Live chunks from which a build tokenizes in worker processes (below, spawning them costs more than it saves)."""
_RECHECK_S = 60.0
"""A search reads the namespace's last commit at least this often, even when the record store's stamp has not
changed (mtimes are coarse: a commit in the stamp's tick leaves it as it was)."""


@dataclass(frozen=True)
class BM25Params:
    """How the index tokenizes and scores: bm25s's Lucene BM25, its English stopwords, a Snowball stemmer."""

    k1: float = 1.5
    b: float = 0.75
    stemmer: str | None = "english"
    """A PyStemmer (Snowball) language, or None for no stemming."""
    stopwords: str = "en"


class BM25Index:
    """A loaded index: bm25s's score matrix and the chunk id of each of its rows."""

    def __init__(
        self, params: BM25Params, key: str, chunk_ids: list[str], sources: list[str], model: bm25s.BM25 | None
    ) -> None:
        self.params = params
        self.key = key
        self.chunk_ids = chunk_ids
        self.sources = sources
        """The distinct ``source`` values of the live chunks (query understanding recognises them)."""
        self._model = model
        self._tokenize = tokenizer(params)

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Each text as the index's terms (lower-cased words without stopwords, stemmed)."""
        return self._tokenize(texts)

    def hit_terms(self, hits: Sequence[Hit]) -> list[list[str]]:
        """Each hit's terms as indexed (title and text)."""
        return self._tokenize([indexed_text(hit.text, hit.metadata) for hit in hits])

    def query_weights(self, query: str) -> dict[str, float]:
        """The query's terms with their counts (a repeated term counts again, as in bm25s)."""
        return dict(Counter(self.tokenize([query])[0]))

    def scores(self, weights: Mapping[str, float]) -> np.ndarray:
        """Every indexed chunk's score for a weighted bag of terms (terms outside the vocabulary add nothing)."""
        total = np.zeros(len(self.chunk_ids), dtype=np.float64)
        if self._model is None:
            return total
        vocabulary = self._model.vocab_dict
        for term, weight in weights.items():
            if term in vocabulary and weight:
                total += weight * self._model.get_scores_from_ids([vocabulary[term]])
        return total

    def search(
        self,
        records: RecordStore,
        namespace: str,
        weights: Mapping[str, float],
        *,
        top_k: int,
        filter: Filter | None,
    ) -> list[Hit]:
        """The ``top_k`` best-scoring live chunks that match ``filter`` (chunks scoring 0 match no term)."""
        scores = self.scores(weights)
        candidates = np.flatnonzero(scores > 0)
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        hits: list[Hit] = []
        start, step = 0, max(2 * top_k, 64)
        while start < len(order) and len(hits) < top_k:
            part = order[start : start + step]
            rows = records.journal.chunk_rows(namespace, [self.chunk_ids[i] for i in part])
            for i in part:
                row = rows.get(self.chunk_ids[i])  # None: removed since the index was checked
                # filtered on the metadata the vector index holds (ingest adds the text), as dense search is
                if row is not None and (filter is None or matches(filter, {**row.metadata, "text": row.text})):
                    hits.append(Hit(row.chunk_id, row.doc_id, float(scores[i]), row.text, row.metadata))
                    if len(hits) == top_k:
                        break
            start, step = start + step, step * 2
        return hits


def current_index(c: Components, namespace: str, params: BM25Params = BM25Params()) -> BM25Index:
    """The namespace's index, in sync with its live chunks (loaded or rebuilt when they changed)."""
    return _synced(c, namespace, params, force_check=False)[0]


def refresh_bm25(c: Components, namespace: str, params: BM25Params = BM25Params()) -> bool:
    """Bring the namespace's persisted index in line with its live chunks; True if it was rebuilt."""
    return _synced(c, namespace, params, force_check=True)[1]


def index_folder(config: RaglineConfig, namespace: str) -> Path:
    """``<home>/bm25/<namespace>``; refuses names that are not a single safe path segment."""
    if not _SAFE_NAMESPACE.fullmatch(namespace) or namespace in (".", ".."):
        raise ConfigError(f"namespace {namespace!r}: expected 1-100 ASCII letters, digits, '-', '_' or '.'")
    return config.home / "bm25" / namespace


def live_fingerprint(records: RecordStore, namespace: str) -> str:
    """SHA-256 over the live chunks' sorted (chunk id, text hash, title), read page by page."""
    digest = hashlib.sha256()
    for page in live_pages(records, namespace, with_text=False):
        _digest_rows(digest, page)
    return digest.hexdigest()


def live_pages(records: RecordStore, namespace: str, with_text: bool) -> Iterator[list[KeywordRow]]:
    """The live chunks as keyword search indexes them, in chunk id order, ``_PAGE`` at a time."""
    after = ""
    while page := records.journal.keyword_rows_after(namespace, after, _PAGE, with_text):
        yield page
        after = page[-1].chunk_id


def _digest_rows(digest: Any, rows: Sequence[KeywordRow]) -> None:
    digest.update("".join(f"{row.chunk_id}\x00{row.text_hash}\x00{row.title}\n" for row in rows).encode())


# --- keeping loaded indexes in sync ---------------------------------------------------------------------------

_Stamp = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Checked:
    """A loaded index and when it was last found in sync: the record store's stamp and the last commit then, and
    the monotonic time."""

    index: BM25Index
    stamp: _Stamp | None
    commit: str | None
    at: float


_loaded: dict[tuple[Path, BM25Params], _Checked] = {}
"""Per process: (folder, params) → the loaded index and when it was checked."""
_loaded_lock = threading.Lock()


def _synced(c: Components, namespace: str, params: BM25Params, *, force_check: bool) -> tuple[BM25Index, bool]:
    """The in-sync index and whether it had to be rebuilt."""
    folder = index_folder(c.config, namespace)
    stamp = _records_stamp(c.config)  # taken first: a write after it triggers another check
    now = time.monotonic()
    with _loaded_lock:
        cached = _loaded.get((folder, params))
        trusted = None if force_check else cached
        if trusted is not None and stamp is not None and stamp == trusted.stamp and now - trusted.at < _RECHECK_S:
            return trusted.index, False  # nothing written here this minute: not even the last commit is read
        commit = c.records.journal.last_commit(namespace)  # read before the scan: a commit after it shows
        if trusted is not None and commit is not None and commit == trusted.commit:
            _loaded[(folder, params)] = replace(trusted, stamp=stamp, at=now)  # no commit since it was checked
            return trusted.index, False
        noted = None if force_check or commit is None else _checked_at(folder, commit, params)
        key = noted
        if key is None and (cached is not None or _has_index(folder)):  # else a first build: nothing to find
            key = _index_key(live_fingerprint(c.records, namespace), params)
        index, rebuilt = None, False
        if key is not None:
            index = cached.index if cached is not None and cached.index.key == key else _load(folder / key, params)
        if index is None:
            index, rebuilt = _build(folder, c.records, namespace, params, c.workers), True
        scanned = noted is None or rebuilt  # a note already names this commit unless the live chunks were read
        if scanned and commit is not None and c.records.journal.last_commit(namespace) == commit:  # none meanwhile
            _mark_checked(folder / index.key, commit, params)
        _loaded[(folder, params)] = _Checked(index, stamp, commit, now)
        return index, rebuilt


def _checked_at(folder: Path, commit: str, params: BM25Params) -> str | None:
    """The key of the index under ``folder`` last found in sync with ``params`` at ``commit`` (``CHECKED``), by any
    process: the live chunks are the same while the last commit is, so a new process needs no scan to trust it."""
    if not folder.is_dir():
        return None
    for child in folder.iterdir():
        try:
            checked = json.loads((child / CHECKED).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if checked == {"commit": commit, "params": asdict(params)}:
            return child.name
    return None


def _mark_checked(path: Path, commit: str, params: BM25Params) -> None:
    """Note in the index at ``path`` that it held the live chunks at ``commit`` (``_checked_at``). Best effort: the
    folder may be pruned by another process's build meanwhile, and a missing note only costs a scan."""
    temporary = path / f".{CHECKED}.{uuid.uuid4().hex}"
    try:
        temporary.write_text(json.dumps({"commit": commit, "params": asdict(params)}), encoding="utf-8")
        temporary.replace(path / CHECKED)
    except OSError:
        temporary.unlink(missing_ok=True)


def _has_index(folder: Path) -> bool:
    """Whether ``folder`` holds a built index (of any key and parameters)."""
    return folder.is_dir() and any((child / MANIFEST).is_file() for child in folder.iterdir())


def _records_stamp(config: RaglineConfig) -> _Stamp | None:
    """(mtime, size) of the SQLite record store's database and write-ahead log: any write changes one of them. None
    for PostgreSQL, which has no files here: every search reads the last commit."""
    if config.state_backend != "sqlite":
        return None
    path, stamp = config.record_store_path, []
    for file in (path, path.with_name(path.name + "-wal")):
        try:
            stat = file.stat()
            stamp.append((stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            stamp.append((0, 0))
    return tuple(stamp)


def _index_key(fingerprint: str, params: BM25Params) -> str:
    return hashlib.sha256(f"{fingerprint}\x00{json.dumps(asdict(params), sort_keys=True)}".encode()).hexdigest()[:32]


# --- building and loading -------------------------------------------------------------------------------------


def _build(folder: Path, records: RecordStore, namespace: str, params: BM25Params, workers: WorkerPool) -> BM25Index:
    """Index the live chunks page by page (``StreamingBM25``), persist the index under ``folder/<key>`` and remove
    older keys. The key is the fingerprint of the rows indexed, read in the same pass. The term counts of chunks a
    previous build holds unchanged are reused (``bm25_reuse``): only the others are read with their texts and
    tokenized, in ``workers`` when the namespace is large (stopped when done)."""
    started = time.perf_counter()
    temporary = folder / f".tmp-{uuid.uuid4().hex}"
    digest, chunk_ids, sources = hashlib.sha256(), list[str](), set[str]()
    previous = bm25_reuse.previous_rows(folder, asdict(params))
    tokenized = 0
    try:
        builder = StreamingBM25(temporary, params.k1, params.b, previous.vocabulary if previous else ())
        pages = _pages(records, namespace, previous)
        pool = workers if records.journal.live_chunk_count(namespace) >= _WORKERS_FROM else None
        try:
            for page, counts in bm25_tokens.counted_pages(pages, _fresh_texts, params.stemmer, params.stopwords, pool):
                _digest_rows(digest, page.rows)
                chunk_ids += [row.chunk_id for row in page.rows]
                sources.update(row.source for row in page.rows if row.source is not None)
                builder.append(page.entries(builder, previous, counts), page.keys)
                tokenized += len(page.fresh)
        finally:
            if pool is not None:
                pool.close()  # a rebuild is rare: no idle workers left behind (in the query service, say)
        key = _index_key(digest.hexdigest(), params)
        if not chunk_ids:
            _prune(folder, keep=None)
            return BM25Index(params, key, [], [], None)
        builder.finish()
        manifest = {
            "key": key,
            "params": asdict(params),
            "chunk_ids": chunk_ids,
            "sources": sorted(sources),
            "rows": bm25_reuse.rows_manifest(temporary),
        }
        (temporary / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        try:
            temporary.rename(folder / key)
        except OSError:  # another process built the same key first
            pass
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    _prune(folder, keep=key)
    log.info(
        "bm25 index for %s: %d chunks (%d tokenized) in %.2f s",
        folder.name,
        len(chunk_ids),
        tokenized,
        time.perf_counter() - started,
    )
    index = _load(folder / key, params)
    if index is None:
        raise StoreError(f"the bm25 index just built at {folder / key} cannot be read")
    return index


@dataclass(frozen=True)
class _Page:
    """A page of live chunks to index: its rows (with texts where they are to be tokenized), their keys, and each
    row's chunk in the previous build (-1: tokenized now, in the page's ``fresh`` places)."""

    rows: list[KeywordRow]
    keys: np.ndarray
    reused: np.ndarray

    @property
    def fresh(self) -> np.ndarray:
        return np.flatnonzero(self.reused < 0)

    def entries(self, builder: StreamingBM25, previous: bm25_reuse.PreviousRows | None, fresh: PageCounts) -> Rows:
        """The page's rows for ``builder`` (numbering its terms as ``previous`` did): the previous build's for the
        reused chunks, ``fresh`` (the counts of the others) for the rest."""
        kept = np.flatnonzero(self.reused >= 0)
        if previous is None or not len(kept):
            return builder.rows(fresh)
        parts = [(kept, previous.rows(self.reused[kept])), (self.fresh, builder.rows(fresh))]
        return bm25_reuse.combine(len(self.rows), parts)


def _pages(records: RecordStore, namespace: str, previous: bm25_reuse.PreviousRows | None) -> Iterator[_Page]:
    """The live chunks, a page at a time; without a previous build, all read with their texts. With one, read
    without, and only the chunks it lacks (or holds with another text or title) are read again with theirs: a chunk
    removed meanwhile is left out, one changed meanwhile is indexed as it is now (the key describes what was
    indexed, so the next check sees the difference)."""
    if previous is None:
        for page in live_pages(records, namespace, with_text=True):
            yield _Page(page, bm25_reuse.row_keys(page), np.full(len(page), -1, dtype=np.int64))
        return
    for page in live_pages(records, namespace, with_text=False):
        keys = bm25_reuse.row_keys(page)
        reused = previous.find(page, keys)
        missing = [page[n].chunk_id for n in np.flatnonzero(reused < 0).tolist()]
        if missing:
            fetched = records.journal.chunk_rows(namespace, missing)
            rows, kept = [], []
            for row, chunk in zip(page, reused.tolist()):
                if chunk < 0:
                    now = fetched.get(row.chunk_id)
                    if now is None:  # removed since the page was read
                        continue
                    row = keyword_row(row.chunk_id, now.text_hash, now.metadata, now.text)
                rows.append(row)
                kept.append(chunk)
            page, reused, keys = rows, np.array(kept, dtype=np.int64), bm25_reuse.row_keys(rows)
        yield _Page(page, keys, reused)


def _fresh_texts(page: _Page) -> list[str]:
    return [_indexed(page.rows[n].title, page.rows[n].text) for n in page.fresh.tolist()]


def _load(path: Path, params: BM25Params) -> BM25Index | None:
    """The index persisted at ``path``, or None if there is none (or it is unreadable: it will be rebuilt)."""
    import bm25s

    if not (path / MANIFEST).is_file():
        return None
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        model = bm25s.BM25.load(path, mmap=True, show_progress=False)  # the score arrays stay on disk
    except (OSError, ValueError, KeyError) as exc:
        log.warning("bm25 index at %s is unreadable (%s); rebuilding", path, type(exc).__name__)
        return None
    return BM25Index(params, manifest["key"], manifest["chunk_ids"], manifest["sources"], model)


def _prune(folder: Path, keep: str | None) -> None:
    """Remove every index under ``folder`` but ``keep``, and temporary folders of builds that died."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        try:
            building = child.name.startswith(".tmp-") and time.time() - child.stat().st_mtime < _STALE_TEMP_S
        except FileNotFoundError:  # another process removed it
            continue
        if child.name != keep and not building:
            shutil.rmtree(child, ignore_errors=True)


def indexed_text(text: str, metadata: Metadata) -> str:
    """What BM25 indexes for a chunk: its document title, then its text."""
    return _indexed(metadata_title(metadata), text)


def _indexed(title: str, text: str) -> str:
    return f"{title}\n{text}"


def tokenizer(params: BM25Params) -> Callable[[Sequence[str]], list[list[str]]]:
    """The index's tokenizer (``ragline.retrieval.bm25_tokens``) with ``params``'s stemmer and stopwords."""
    return bm25_tokens.tokenizer(params.stemmer, params.stopwords)
