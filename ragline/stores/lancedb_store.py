"""The embedded default vector store: LanceDB on local disk, one table per namespace.

A namespace ``ns`` lives in table ``ns_<ns>`` with columns:

- ``id`` (string), ``vector`` (fixed_size_list<float32>[dim]),
- ``metadata``: the record's metadata as JSON, so it round-trips exactly (int stays int, float stays float),
- one nullable column per (metadata key, kind of value), named by ``filters.metadata_column``: string, float64,
  bool or list<string>. Columns are added when a key/kind first appears. A key may hold different kinds in
  different records, as Pinecone allows: each kind has its own column, and filters look at all of them.

Queries on a namespace of at most ``exact_search_max_vectors`` records are answered in memory from a version's
second query on (``lance_exact.ExactIndex``: the table version read once, batch by batch, one matrix-vector product
a query, through 8-bit codes first above ``quantize_above_vectors``, the filter evaluated over in-memory columns).
The first query of a version searches flat on disk, so a process that queries once (an ingest checking its writes)
never holds a copy. The copy is keyed by the table's latest manifest (``_latest_manifest``: its name and a digest of
its bytes), checked on the file system before every query, so a write by any process on this host is seen by the
next query without opening the table through LanceDB, and a write or maintenance through this store drops it at
once.
Larger namespaces are searched by LanceDB: through the vector index ``maintain`` builds for them (IVF_RQ, RaBitQ
codes of 4 bits a dimension; IVF_SQ where the dimension is no multiple of 8), probing ``ann_nprobes`` partitions (by
default the fewest that kept recall on a sample of the namespace's own vectors, ``lance_probes``, measured when the
index was built) and re-ranking ``ann_refine_factor`` × top_k candidates exactly; or flat until the index exists.
``top_k`` counts only matching records: a filter that lets many rows through filters an over-fetch after the search
and re-ranks what passes (``_postfiltered``), others are prefilters (an index search that finds fewer than ``top_k``
matches is redone flat).

``maintain`` (run after each committed run) compacts a namespace's fragments once there are
``compact_min_fragments`` of them, then deletes versions older than ``version_retention``: every write makes a
version and a fragment, and old versions keep their files. Rollback never reads an old version (it rewrites ids from the
record store), so only concurrent readers need the retention: a version another process may still be reading (one
that was the latest at some moment of the retention, however long ago it was written) stays on disk.
A namespace exists while it holds records: a delete that empties it drops its table.
A table whose files cannot be read (a data file or manifest lost, truncated) raises ``IndexDamaged`` on every read;
``describe_namespace`` reads the id column to count, so a lost data file shows as damage, not as the old count.
lancedb (~1.5 s to import) is imported and the directory opened on first use, so importing this module and building
a store stay cheap. ``fingerprint`` reads only the file system: a run that changes nothing checks its seal with it
(``ragline.indexing.seal``) without importing lancedb.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import pyarrow as pa

from ragline.batching import batched
from ragline.errors import IndexDamaged, StoreError
from ragline.held_signals import signals_held
from ragline.memory import release_free_memory
from ragline.records import Metadata
from ragline.stores import lance_probes
from ragline.stores.base import (
    Filter,
    NamespaceStats,
    QueryMatch,
    VectorRecord,
    check_delete_arguments,
    check_query_arguments,
)
from ragline.stores.filters import ColumnKind, column_cell, metadata_column, sql_string, to_lance_where
from ragline.stores.lance_exact import QUANTIZE_ABOVE, ExactIndex, IndexKey

if TYPE_CHECKING:
    from lancedb.db import DBConnection
    from lancedb.index import IndexConfig
    from lancedb.table import Table

log = logging.getLogger(__name__)

_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_TABLE_PREFIX = "ns_"
_MAX_ID_LENGTH = 512  # Pinecone's limit, kept so both backends accept the same ids
_IDS_PER_CALL = 1_000  # bounds the size of one ``id IN (...)`` predicate
_EXACT_BATCH_ROWS = 8_192  # rows read at a time into the in-memory index
_IVF_SAMPLE_RATE = 64
"""Training vectors per IVF partition (LanceDB's default is 256): measured on 1,000,000 × 384 (IVF_PQ, then), the
build's peak memory fell by ~450 MiB and recall held (``benchmarks/streaming_scale.py``, ``query_speed.py``)."""
_IndexType = Literal["IVF_RQ", "IVF_SQ"]
_INDEX_KINDS: Final[dict[_IndexType, str]] = {"IVF_RQ": "IvfRq", "IVF_SQ": "IvfSq"}
"""The vector index kinds the store builds, as ``create_index`` takes them → as ``list_indices`` reports them:
IVF_RQ for a dimension that is a multiple of 8 (LanceDB's RaBitQ needs it), IVF_SQ for any other (``_index_type``)."""
_INDEX_BITS = 4
"""Bits a dimension in the IVF_RQ (RaBitQ) codes. Measured on 1,000,000 × 384 vectors without clusters, every
partition probed, refine 10 (``benchmarks/index_kinds.py``): 4 bits 30.1 ms, recall@10 1.0, built in 49 s; 8 bits
42.8 ms, 124 s; 2 bits recall 0.963; 1 bit 0.618. IVF_SQ (a byte a dimension, the index before): 82.3 ms, 42 s."""
_ALL_PARTITIONS = 1_000_000  # more than any index here has (√rows partitions), so ``nprobes`` probes them all
_POSTFILTER_MARGIN = 4.0
"""A post-filtered query fetches this many times the rows its filter's share should take to yield top_k, in the
index's approximate order, and ranks those that pass by exact scores. Measured on the streaming benchmark's
1,000,000 × 384 near-ties, every partition, one row in eight passing (320 rows fetched): recall@10 0.996, 48–50 ms,
against 52–57 ms for LanceDB re-ranking 480 candidates before the filter (0.997); 2 × (160 rows): 0.974. Clustered,
a 10 % filter: 17 against 25 ms, recall 1.0 (``benchmarks/results/streaming_scale.json``, ``query_speed.json``)."""
_POSTFILTER_MAX_LIMIT = 400
"""Rows a post-filtered query fetches at most (for top 10: a filter letting through at least 10 % of the rows)."""
_SHARES_KEPT = 1_024
"""Filter shares (``_share``) remembered per store, across tables and versions."""
_BASE_COLUMNS = ("id", "vector", "metadata")
_KIND_TYPES: dict[ColumnKind, pa.DataType] = {
    "s": pa.string(),
    "n": pa.float64(),
    "b": pa.bool_(),
    "l": pa.list_(pa.string()),
}
_VENDOR_ERRORS = (ValueError, TypeError, RuntimeError, OSError)  # what lancedb and pyarrow raise
_READ_FAILURES = (RuntimeError, OSError)  # what lance raises when a table's files are missing or damaged
_SOURCE_LOCATION = re.compile(r",\s*/\S+\.rs:\d+:\d+")  # the Rust source location lance appends to errors
_U64_MAX = 2**64 - 1
_V2_MANIFEST_DIGITS = 20  # a manifest named by LanceDB's V2 scheme: u64::MAX - version, zero-padded
_TABLE_ID = b"ragline.table"  # schema metadata: a table's identity, so a dropped and re-created table is not stale


class LanceDBStore:
    """A ``VectorStore`` on a LanceDB directory; see the module docstring for the table layout."""

    def __init__(
        self,
        path: Path,
        *,
        exact_search_max_vectors: int = 300_000,
        quantize_above_vectors: int = QUANTIZE_ABOVE,
        ann_nprobes: int | None = None,
        ann_refine_factor: int = 10,
        compact_min_fragments: int = 8,
        version_retention: timedelta = timedelta(minutes=10),
    ) -> None:
        self._path = Path(path).expanduser().absolute()  # as LanceDB resolves it once: the file checks must agree
        self._exact_limit = exact_search_max_vectors
        self._quantize_above = quantize_above_vectors
        self._nprobes = ann_nprobes
        self._refine_factor = ann_refine_factor
        self._compact_min_fragments = compact_min_fragments
        self._retention = version_retention
        self._exact: dict[str, ExactIndex] = {}
        self._queried: dict[str, IndexKey | None] = {}  # the manifest each table was last queried at without a copy
        self._exact_lock = threading.Lock()
        self._shares: dict[tuple[str, str, int, str], float] = {}  # (table, its identity, version, where)

    @cached_property
    def _db(self) -> DBConnection:
        with signals_held():  # a Ctrl-C or SIGTERM that cut its native setup made the rollback's import panic
            import lancedb  # heavy (~1.5 s): only when the index is read or written

        with _vendor_errors(f"opening {self._path}"):
            return lancedb.connect(self._path)

    def fingerprint(self, namespace: str) -> str | None:
        """A digest of the namespace's files (names, sizes, modification times), None if it has none: every write
        makes a new table version, so any write, repair or damage changes it. Reads only the file system.

        Also None while housekeeping is owed (``_uncalibrated``), so the next run is not sealed and its commit runs
        ``maintain``."""
        name = _table_name(namespace)
        root = self._path / f"{name}.lance"
        if self._nprobes is None and self._uncalibrated(name, root):
            return None
        entries = sorted(
            f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}" for path, stat in _file_stats(root)
        )
        return hashlib.sha256("\n".join(entries).encode()).hexdigest() if entries else None

    def _uncalibrated(self, name: str, root: Path) -> bool:
        """Whether the table has a vector index whose probe calibration is missing or was made for an index that
        is gone (an index of a kind an earlier release built, or a calibration that failed). Read from the files: a
        vector index's folder under ``_indices`` holds ``index.idx`` (scalar indexes hold other files)."""
        try:
            with os.scandir(root / "_indices") as entries:
                vector_indexes = {e.name for e in entries if os.path.exists(os.path.join(e.path, "index.idx"))}
        except (FileNotFoundError, NotADirectoryError):
            return False
        kept = self.probes_path(name)
        kinds = _INDEX_KINDS.values()
        return bool(vector_indexes) and not any(lance_probes.load(kept, u, kinds) for u in vector_indexes)

    def seal_path(self, namespace: str) -> Path:
        """Where the namespace's seal is kept: beside its table, where LanceDB does not look."""
        return self._path / f"{_table_name(namespace)}.seal.json"

    def upsert(self, records: Sequence[VectorRecord], *, namespace: str) -> int:
        """Insert or overwrite records by id (the last of duplicate ids wins); returns the distinct ids written."""
        return self._write(records, namespace, append=False)

    def insert(self, records: Sequence[VectorRecord], *, namespace: str) -> int:
        """``upsert`` for ids the namespace does not hold, appended without LanceDB's merge (which joins the batch
        with every id of the table: 2-4x the time of an append at 300,000 rows, and growing with the table)."""
        return self._write(records, namespace, append=True)

    def _write(self, records: Sequence[VectorRecord], namespace: str, append: bool) -> int:
        name = _table_name(namespace)
        if not records:
            return 0
        batch = _Batch.build(records)
        self._exact.pop(name, None)  # the write makes a new version: free the old one's memory now
        table = self._open(name)
        with _vendor_errors(f"upsert into namespace {namespace!r}"):
            if table is None:
                schema = batch.schema().with_metadata({_TABLE_ID: uuid.uuid4().hex.encode()})
                self._db.create_table(name, data=batch.to_arrow(schema))
                return batch.size
            _check_dimension(_dimension(table), batch.dimension, namespace)
            new_fields = [f for f in batch.schema() if f.name not in table.schema.names]
            if new_fields:
                table.add_columns(new_fields)
            data = batch.to_arrow(table.schema)
            if append:
                table.add(data)
            else:
                table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        return batch.size

    def query(
        self,
        vector: np.ndarray,
        *,
        namespace: str,
        top_k: int = 10,
        filter: Filter | None = None,
        include_values: bool = False,
    ) -> list[QueryMatch]:
        """The ``top_k`` records nearest to ``vector`` by cosine similarity that match ``filter``, best first."""
        name = _table_name(namespace)
        check_query_arguments(top_k, filter)
        query_vector = _vector_matrix([vector], "query vector")[0]
        seen = self._latest_manifest(name)  # before the table is opened: a write after it can only make a copy stale
        exact = self._cached_exact(name, seen)
        if exact is not None:
            _check_dimension(exact.dimension, len(query_vector), namespace)
            return exact.search(query_vector, top_k, filter, include_values)
        table = self._open(name)
        if table is None:
            return []
        _check_dimension(_dimension(table), len(query_vector), namespace)
        with _read_errors(namespace, "query"):
            exact, within_limit = self._exact_index(name, table, seen)
            if exact is not None:
                return exact.search(query_vector, top_k, filter, include_values)
            index = None if within_limit else _vector_index(table)
            nprobes = None if index is None else self._probes(name, index, table, filter)
            if nprobes is not None and filter is not None and index is not None and _current_kind(index):
                after = self._postfiltered(name, table, query_vector, top_k, filter, include_values, nprobes)
                if after is not None:
                    return after
            rows = self._lance_rows(table, query_vector, top_k, filter, include_values, nprobes)
            if nprobes is not None and nprobes < _ALL_PARTITIONS and rows.num_rows < top_k:  # too few in the probed
                rows = self._lance_rows(table, query_vector, top_k, filter, include_values, None)
        return _matches(rows, include_values)

    def _postfiltered(
        self,
        name: str,
        table: Table,
        vector: np.ndarray,
        top_k: int,
        filter: Filter,
        include_values: bool,
        nprobes: int,
    ) -> list[QueryMatch] | None:
        """A filtered query as an unfiltered one for the nearest ``limit`` rows by the index's codes, over the
        partitions the prefiltered query would probe (``nprobes``), filtered after; the rows that pass are ranked by
        exact scores, so only they are re-ranked (LanceDB's re-rank reads each candidate's vector on its own, before
        the filter: most of a post-filtered query's time when it re-ranked 480 rows for 60 that pass). A prefilter
        costs a pass over the filter columns on top of the scan. Fewer probes than the prefilter's (an unfiltered
        query's 16) miss the filtered neighbours in other partitions.
        None when the filter is too selective for a short over-fetch (``_POSTFILTER_MAX_LIMIT``) or too few passed."""
        limit = math.ceil(_POSTFILTER_MARGIN * top_k / max(self._share(name, table, filter), 1e-9))
        if limit > _POSTFILTER_MAX_LIMIT:
            return None
        rows = self._lance_rows(table, vector, limit, filter, True, nprobes, rerank=False, prefilter=False)
        if rows.num_rows < top_k:
            return None
        candidates = _vectors(rows)
        unit = vector / np.linalg.norm(vector)  # each side normalised on its own: a product of norms can underflow
        similarity = (candidates @ unit) / np.maximum(np.linalg.norm(candidates, axis=1), np.finfo(np.float32).tiny)
        best = np.argsort(-similarity, kind="stable")[:top_k]
        exact = rows.take(best).set_column(
            rows.schema.get_field_index("_distance"), "_distance", pa.array(1.0 - similarity[best], pa.float32())
        )
        return _matches(exact, include_values)

    def maintain(self, namespace: str) -> None:
        """Once the namespace has ``compact_min_fragments`` fragments, compact them and delete versions older than
        the retention (one LanceDB ``optimize``); build its vector index once it holds more than
        ``exact_search_max_vectors`` records, and replace one of a kind an earlier release built.

        Housekeeping only: a failure (another process compacting at the same moment) is logged, not raised.
        """
        self._exact.pop(_table_name(namespace), None)  # compaction makes a new version
        table = self._open(_table_name(namespace))
        if table is None:
            return
        try:
            with _vendor_errors(f"maintenance of namespace {namespace!r}"):
                self._maintain(table)
        except StoreError as exc:
            log.warning("%s", exc)

    def _maintain(self, table: Table) -> None:
        release_free_memory()  # what the run's writes and checks freed, before the two steps that need the most
        stats: Any = table.stats()  # a dict at run time, typed as a class
        fragments = int(stats["fragment_stats"]["num_fragments"])
        if self._compact_min_fragments and fragments >= self._compact_min_fragments:
            with warnings.catch_warnings():  # lancedb warns about a zero retention, which is the caller's choice
                warnings.simplefilter("ignore", UserWarning)
                table.optimize(cleanup_older_than=self._cleanup_age(table))  # also adds new rows to the vector index
            release_free_memory()  # compaction's buffers: hundreds of MiB at 1,000,000 rows
        rows = table.count_rows()
        index = _vector_index(table)
        index_type = _index_type(table)
        kind = _INDEX_KINDS[index_type]
        if (index is None and rows > self._exact_limit) or (index is not None and index.index_type != kind):
            # a new index, or one of the kind an earlier release built (whatever the size now)
            table.create_index(
                metric="cosine",
                index_type=index_type,
                num_partitions=max(1, int(rows**0.5)),
                vector_column_name="vector",
                sample_rate=_IVF_SAMPLE_RATE,
                num_bits=_INDEX_BITS,
                replace=True,
            )
            release_free_memory()
            index = _vector_index(table)
        if index is None or not index.index_uuid or self._nprobes is not None:  # ``ann_nprobes``: no calibration
            return
        kept = self.probes_path(table.name)
        if lance_probes.load(kept, index.index_uuid, (kind,)) is None:
            kept.unlink(missing_ok=True)  # a stale one, gone: if this calibration fails, the seal is withheld
            self._calibrate(table.name, index.index_uuid, kind, index.num_indexed_rows or rows)
            release_free_memory()  # the index partitions its queries loaded: ~500 MiB at 1,000,000 × 384

    def probes_path(self, name: str) -> Path:
        """Where a table's probe calibration is kept: beside it, where LanceDB does not look."""
        return self._path / f"{name}.probes.json"

    def _probes(self, name: str, index: IndexConfig, table: Table, filter: Filter | None) -> int:
        """Partitions an indexed query probes: ``ann_nprobes`` if set, else the index's calibration, else all.
        A filter divides a calibrated count by the share of rows it lets through: the probed partitions hold only
        that share of the matches the calibration counted on."""
        if self._nprobes is not None:
            return self._nprobes
        probes = lance_probes.load(self.probes_path(name), index.index_uuid)  # any kind: valid for its index
        if probes is None or probes.nprobes is None:
            return _ALL_PARTITIONS
        if filter is None:
            return probes.nprobes
        return min(_ALL_PARTITIONS, math.ceil(probes.nprobes / max(self._share(name, table, filter), 1e-9)))

    def _share(self, name: str, table: Table, filter: Filter) -> float:
        """The share of the table's rows ``filter`` lets through, counted once per table version (a count scans the
        filter's columns: ~15 ms at 1,000,000 rows)."""
        where = to_lance_where(filter, table.schema.names)
        key = (name, *_version_key(table), where)
        share = self._shares.get(key)
        if share is None:
            if len(self._shares) >= _SHARES_KEPT:
                self._shares.clear()
            share = self._shares[key] = table.count_rows(where) / max(1, table.count_rows())
        return share

    def _calibrate(self, name: str, index_uuid: str, kind: str, indexed_rows: int) -> None:
        """Measure the fewest probes that find the exact neighbours of ``SAMPLE`` stored vectors, and keep it.
        Through a connection of its own, whose index cache goes when it returns instead of staying in this one's."""
        import lancedb

        table = lancedb.connect(self._path).open_table(name)
        rows = table.count_rows()
        offsets = np.random.default_rng(0).choice(rows, size=min(lance_probes.SAMPLE, rows), replace=False)
        sample = table.take_offsets(sorted(offsets.tolist())).select(["id", "vector"]).to_arrow()
        ids, queries = sample.column("id").to_pylist(), _vectors(sample)
        k = lance_probes.NEIGHBOURS + 1  # each sample vector finds itself, which does not count
        batches = (
            (batch.column("id").to_pylist(), _vectors(pa.Table.from_batches([batch])))
            for batch in table.search().select(["id", "vector"]).limit(None).to_batches(_EXACT_BATCH_ROWS)
        )
        truth = lance_probes.exact_neighbours(queries, batches, k)

        def search(i: int, nprobes: int | None) -> list[lance_probes.Neighbour]:
            found = _matches(self._lance_rows(table, queries[i], k, None, False, nprobes or _ALL_PARTITIONS), False)
            return [(m.id, m.score) for m in found]

        partitions = max(1, int(indexed_rows**0.5))  # as built
        probes = lance_probes.calibrate(index_uuid, kind, rows, partitions, ids, truth, search)
        lance_probes.save(self.probes_path(name), probes)
        log.info(
            "%s: indexed queries probe %s partitions (recall@10 %.3f on %d stored vectors)",
            name,
            probes.nprobes or "all",
            probes.recall,
            len(ids),
        )

    def _cleanup_age(self, table: Table) -> timedelta:
        """The age from which ``optimize`` may delete a version without pulling it from under a reader.

        A reader in another process may be on any version that was the latest at some moment of the retention: those
        written within it, and the one that was the latest when it began, however old (an unchanged namespace's
        version can be days old when a run supersedes it). LanceDB deletes by the time a version was written, so the
        age passed is that version's age plus the retention, a margin for the compaction that runs first.
        """
        if not self._retention:
            return self._retention
        now = time.time()
        began = now - self._retention.total_seconds()
        written = [v["timestamp"].timestamp() for v in table.list_versions()]  # naive local times, as LanceDB gives
        latest_then = max((t for t in written if t <= began), default=None)
        return self._retention if latest_then is None else self._retention + timedelta(seconds=now - latest_then)

    def _latest_manifest(self, name: str) -> IndexKey | None:
        """The table's latest version as the file system shows it: its manifest's name and a digest of its bytes (None
        without one, or if it cannot be read: the query then opens the table, which reports the problem). Every
        commit, by any process, writes a new manifest under ``_versions`` (named ``u64::MAX - version`` in LanceDB's
        current scheme, ``version`` in the one before). A table dropped and re-created restarts the numbers, but its
        manifest holds another table id (schema metadata) and other data file names, so its digest differs."""
        latest: tuple[int, str] | None = None
        versions = self._path / f"{name}.lance" / "_versions"
        try:
            with os.scandir(versions) as entries:
                for entry in entries:
                    stem, _, suffix = entry.name.partition(".")
                    if suffix != "manifest" or not stem.isdigit():
                        continue
                    version = _U64_MAX - int(stem) if len(stem) == _V2_MANIFEST_DIGITS else int(stem)
                    if latest is None or version > latest[0]:
                        latest = (version, entry.name)
            if latest is None:
                return None
            digest = hashlib.blake2b((versions / latest[1]).read_bytes(), digest_size=16).hexdigest()
        except OSError:
            return None
        return latest[1], digest

    def _cached_exact(self, name: str, seen: IndexKey | None) -> ExactIndex | None:
        """The in-memory index if it holds the version ``seen`` and every data file it was read from is on disk
        unchanged (a lost or truncated file makes the query read the table, which reports the damage)."""
        cached = self._exact.get(name)
        if cached is None or seen is None or cached.key != seen:
            return None
        return cached if cached.files <= self._data_files(name) else None

    def _exact_index(self, name: str, table: Table, seen: IndexKey | None) -> tuple[ExactIndex | None, bool]:
        """The in-memory index of the table's version ``seen`` (its manifest, read before ``table`` was opened),
        and whether the table is within the exact limit.

        The index is built when a version within the limit is queried a second time: the first query of a version
        searches flat on disk (``None``). A process that checks its writes with one query (an ingest's verify)
        never holds a copy of the table; one that serves queries builds it on its second (about as long as a
        flat search at 100,000 records). A write between ``seen`` and the read leaves the index keyed by the older
        manifest: the next query finds it stale and reads the table again.
        """
        with self._exact_lock:
            cached = self._cached_exact(name, seen)  # built by another thread meanwhile
            if cached is not None:
                return cached, True
            self._exact.pop(name, None)
            rows = table.count_rows()
            if rows > self._exact_limit:
                return None, False
            if seen is None or self._queried.get(name) != seen:  # unknown (never held) or a first query
                self._queried[name] = seen
                return None, True
            files = self._data_files(name)
            filter_columns = [c for c in table.schema.names if c not in _BASE_COLUMNS]
            query = table.search().select([*_BASE_COLUMNS, *filter_columns]).limit(None)
            batches = query.to_batches(_EXACT_BATCH_ROWS)
            self._exact[name] = ExactIndex.build(
                seen, files, batches, table.schema, filter_columns, rows, self._quantize_above
            )
            return self._exact[name], True

    def _data_files(self, name: str) -> frozenset[tuple[str, int]]:
        """Names and sizes of the files in the table's data folder (LanceDB's on-disk layout); a file removed while
        the folder is listed is left out."""
        files = set()
        try:
            with os.scandir(self._path / f"{name}.lance" / "data") as entries:
                for entry in entries:
                    try:
                        files.add((entry.name, entry.stat().st_size))
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            pass
        return frozenset(files)

    def _lance_rows(
        self,
        table: Table,
        query_vector: np.ndarray,
        top_k: int,
        filter: Filter | None,
        include_values: bool,
        nprobes: int | None,
        rerank: bool = True,
        prefilter: bool = True,
    ) -> pa.Table:
        """Through the vector index probing ``nprobes`` partitions and re-ranking ``ann_refine_factor`` × top_k
        exactly (``rerank=False``: in the order and with the distances of the index's codes), or flat (None);
        ``filter`` before the search or, ``prefilter=False``, on its ``top_k`` rows."""
        columns = ["id", "metadata", "_distance", *(["vector"] if include_values else [])]
        search = (
            table.search(query_vector, vector_column_name="vector")
            .distance_type("cosine")  # type: ignore[attr-defined]  # on the vector query builder
            .select(columns)
            .limit(top_k)
        )
        if nprobes is not None:
            search = search.nprobes(nprobes)
            if rerank:
                search = search.refine_factor(self._refine_factor)
        else:
            search = search.bypass_vector_index()
        if filter is not None:
            search = search.where(to_lance_where(filter, table.schema.names), prefilter=prefilter)
        return search.to_arrow()

    def fetch(self, ids: Sequence[str], *, namespace: str) -> dict[str, VectorRecord]:
        """The records with these ids that exist, in the order asked for."""
        name = _table_name(namespace)
        table = self._open(name)
        if table is None or not ids:
            return {}
        found: dict[str, VectorRecord] = {}
        with _read_errors(namespace, "fetch"):
            for chunk in batched(dict.fromkeys(ids), _IDS_PER_CALL):
                rows = table.search().where(_id_in(chunk)).select(list(_BASE_COLUMNS)).limit(None).to_arrow()
                found.update((record.id, record) for record in _records(rows))
        return {i: found[i] for i in ids if i in found}

    def delete(
        self,
        *,
        namespace: str,
        ids: Sequence[str] | None = None,
        filter: Filter | None = None,
        delete_all: bool = False,
    ) -> None:
        """Delete by ids, by filter, or the whole namespace (exactly one of the three)."""
        name = _table_name(namespace)
        check_delete_arguments(ids, filter, delete_all)
        self._exact.pop(name, None)
        if delete_all:  # without opening the table: this is how a damaged one is dropped
            with _vendor_errors(f"delete of namespace {namespace!r}"):
                self._db.drop_table(name, ignore_missing=True)  # type: ignore[call-arg]  # lancedb 0.40 takes it
            return
        table = self._open(name)
        if table is None:
            return
        with _vendor_errors(f"delete from namespace {namespace!r}"):
            if ids is not None:
                for chunk in batched(ids, _IDS_PER_CALL):
                    table.delete(_id_in(chunk))
            elif filter is not None:
                table.delete(to_lance_where(filter, table.schema.names))
            if table.count_rows() == 0:
                self._db.drop_table(name, ignore_missing=True)  # type: ignore[call-arg]  # lancedb 0.40 takes it

    def list_ids(self, *, namespace: str, prefix: str = "") -> Iterator[str]:
        """Ids starting with ``prefix``, in lexicographic (code point) order; reads the id column only."""
        name = _table_name(namespace)
        table = self._open(name)
        if table is None:
            return iter(())
        with _read_errors(namespace, "listing ids"):
            query = table.search().select(["id"]).limit(None)
            if prefix:
                query = query.where(f"starts_with(id, {sql_string(prefix)})")  # no LIKE: no wildcards to escape
            ids: list[str] = query.to_arrow().column("id").to_pylist()
        return iter(sorted(ids))

    def describe_namespace(self, namespace: str) -> NamespaceStats:
        """Record count and vector dimension (0 and None if the namespace holds no records).

        The count reads the id column (about 5 ms per 100,000 rows): ``count_rows()`` alone reads the manifest,
        which goes on counting the rows of a data file that was lost.
        """
        table = self._open(_table_name(namespace))
        with _read_errors(namespace, "count"):
            count = table.count_rows("id IS NOT NULL") if table is not None else 0
        if table is None or count == 0:
            return NamespaceStats(vector_count=0, dimension=None)
        return NamespaceStats(vector_count=count, dimension=_dimension(table))

    def namespaces(self) -> list[str]:
        """Names of the namespaces that hold at least one record, sorted."""
        with _vendor_errors("listing namespaces"):
            tables = [n for n in self._table_names() if n.startswith(_TABLE_PREFIX)]
            return sorted(n.removeprefix(_TABLE_PREFIX) for n in tables if self._count(n))

    def _open(self, name: str) -> Table | None:
        """The table, or None if it does not exist; ``IndexDamaged`` if its manifest cannot be read."""
        try:
            return self._db.open_table(name)
        except ValueError:  # lancedb's "Table '...' was not found"
            return None
        except _READ_FAILURES as exc:
            problem = f"LanceDB cannot open it ({_vendor_message(exc)})"
            raise IndexDamaged(name.removeprefix(_TABLE_PREFIX), problem) from exc

    def _count(self, name: str) -> int:
        table = self._open(name)
        return table.count_rows() if table is not None else 0

    def _table_names(self) -> Iterator[str]:
        page_token = None
        while True:
            page = self._db.list_tables(page_token=page_token)
            yield from page.tables
            page_token = page.page_token
            if not page_token:
                return


@dataclass(frozen=True)
class _Batch:
    """An upsert batch, validated and laid out in columns."""

    ids: list[str]
    vectors: np.ndarray
    metadata_json: list[str]
    cells: dict[str, list[Any]]  # metadata column name -> one value (or None) per record
    kinds: dict[str, ColumnKind]

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def build(cls, records: Sequence[VectorRecord]) -> _Batch:
        latest = list({_checked_id(r.id): r for r in records}.values())
        cells: dict[str, list[Any]] = {}
        kinds: dict[str, ColumnKind] = {}
        for row, record in enumerate(latest):
            for key, (kind, value) in _metadata_cells(record.id, record.metadata).items():
                column = metadata_column(key, kind)
                values = cells.get(column)
                if values is None:  # a column's first value: every other row starts null
                    values = cells[column] = [None] * len(latest)
                    kinds[column] = kind
                values[row] = value
        return cls(
            ids=[r.id for r in latest],
            vectors=_vector_matrix([r.values for r in latest], "vector"),
            metadata_json=[json.dumps(r.metadata, allow_nan=False) for r in latest],
            cells=cells,
            kinds=kinds,
        )

    def schema(self) -> pa.Schema:
        """Base columns plus this batch's metadata columns."""
        base = [
            pa.field("id", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), self.dimension)),
            pa.field("metadata", pa.string()),
        ]
        return pa.schema(base + [pa.field(c, _KIND_TYPES[self.kinds[c]]) for c in sorted(self.cells)])

    def to_arrow(self, schema: pa.Schema) -> pa.Table:
        """The batch in ``schema``'s columns; metadata columns this batch lacks are null, so overwrites clear them."""
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(self.vectors.ravel()), self.dimension)
        arrays = [pa.array(self.ids, pa.string()), vectors, pa.array(self.metadata_json, pa.string())]
        for field in schema:
            if field.name not in _BASE_COLUMNS:
                values = self.cells.get(field.name)
                arrays.append(pa.nulls(self.size, field.type) if values is None else pa.array(values, field.type))
        return pa.Table.from_arrays(arrays, schema=schema)


def _table_name(namespace: str) -> str:
    """Table of a namespace; namespaces use LanceDB's table-name alphabet, so the mapping is plain and reversible."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise StoreError(f"invalid namespace {namespace!r}: use 1-128 ASCII letters, digits, '-', '_' or '.'")
    return _TABLE_PREFIX + namespace


def _file_stats(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every file under ``root`` with its stat; nothing when ``root`` does not exist."""
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _file_stats(Path(entry.path))
        else:
            yield entry.path, entry.stat(follow_symlinks=False)


def _checked_id(record_id: Any) -> str:
    if not isinstance(record_id, str) or not 1 <= len(record_id) <= _MAX_ID_LENGTH:
        raise StoreError(f"record ids must be strings of 1-{_MAX_ID_LENGTH} characters, got {record_id!r}")
    return record_id


def _metadata_cells(record_id: str, metadata: Metadata) -> dict[str, tuple[ColumnKind, Any]]:
    """Each metadata key's column kind and stored value; StoreError for values Pinecone would refuse."""
    if not isinstance(metadata, dict):
        raise StoreError(f"record {record_id!r}: metadata must be a dict, got {type(metadata).__name__}")
    cells = {}
    for key, value in metadata.items():
        cell = column_cell(value) if isinstance(key, str) else None
        if cell is None:
            raise StoreError(
                f"record {record_id!r}: metadata {key!r}: {value!r} is not allowed; keys are strings and values "
                "are strings, finite numbers (integers of at most 64 bits), booleans or lists of strings"
            )
        cells[key] = cell
    return cells


def _vector_matrix(vectors: Sequence[Any], what: str) -> np.ndarray:
    """Vectors as a float32 matrix; StoreError unless they are 1-D, equally long, finite and non-zero."""
    try:
        rows = [np.asarray(v, dtype=np.float32) for v in vectors]
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what}: values must be numbers") from exc
    shapes = {row.shape for row in rows}
    if len(shapes) != 1 or len(rows[0].shape) != 1 or rows[0].shape[0] == 0:
        raise StoreError(f"{what}: expected non-empty 1-D vectors of one dimension, got shapes {sorted(shapes)}")
    matrix = np.stack(rows)
    if not np.isfinite(matrix).all():
        raise StoreError(f"{what}: values must be finite")
    if not np.any(matrix, axis=1).all():
        raise StoreError(f"{what}: an all-zero vector has no cosine similarity")
    return matrix


def _version_key(table: Table) -> tuple[str, int]:
    """The table's identity (so a dropped and re-created table is another one) and its version."""
    return (table.schema.metadata or {}).get(_TABLE_ID, b"").decode(), table.version


def _vector_index(table: Table) -> IndexConfig | None:
    return next((i for i in table.list_indices() if i.columns == ["vector"]), None)


def _dimension(table: Table) -> int:
    return int(table.schema.field("vector").type.list_size)


def _current_kind(index: IndexConfig) -> bool:
    """Whether the index is of a kind this release builds: an earlier release's IVF_PQ codes order candidates too
    loosely for a post-filter without LanceDB's re-rank (recall@10 0.78 against 0.86 with it)."""
    return index.index_type in _INDEX_KINDS.values()


def _index_type(table: Table) -> _IndexType:
    """The kind of vector index the store builds for the table (a key of ``_INDEX_KINDS``)."""
    return "IVF_RQ" if _dimension(table) % 8 == 0 else "IVF_SQ"


def _check_dimension(expected: int, dimension: int, namespace: str) -> None:
    if dimension != expected:
        raise StoreError(f"dimension mismatch: namespace {namespace!r} holds {expected}-d vectors, got {dimension}-d")


def _id_in(ids: Sequence[str]) -> str:
    return f"id IN ({', '.join(sql_string(i) for i in ids)})"


def _vectors(rows: pa.Table) -> np.ndarray:
    column = rows.column("vector").combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


def _records(rows: pa.Table) -> Iterator[VectorRecord]:
    vectors = _vectors(rows)
    for i, (record_id, metadata) in enumerate(zip(rows.column("id").to_pylist(), rows.column("metadata").to_pylist())):
        yield VectorRecord(id=record_id, values=vectors[i], metadata=json.loads(metadata))


def _matches(rows: pa.Table, include_values: bool) -> list[QueryMatch]:
    """Query rows as matches; cosine distance d becomes similarity 1 - d, clamped against float32 rounding."""
    vectors = _vectors(rows) if include_values else None
    ids = rows.column("id").to_pylist()
    metadata = rows.column("metadata").to_pylist()
    distances = rows.column("_distance").to_pylist()
    return [
        QueryMatch(
            id=ids[i],
            score=min(1.0, max(-1.0, 1.0 - distances[i])),
            metadata=json.loads(metadata[i]),
            values=None if vectors is None else vectors[i],
        )
        for i in range(len(ids))
    ]


@contextmanager
def _vendor_errors(action: str) -> Iterator[None]:
    """Re-raise LanceDB and Arrow failures as StoreError, keeping the cause."""
    try:
        yield
    except _VENDOR_ERRORS as exc:
        raise StoreError(f"LanceDB {action} failed: {_vendor_message(exc)}") from exc


@contextmanager
def _read_errors(namespace: str, action: str) -> Iterator[None]:
    """Like ``_vendor_errors`` for a read of an existing table: a file lance cannot read is damage."""
    try:
        yield
    except _READ_FAILURES as exc:
        raise IndexDamaged(namespace, f"LanceDB {action} failed ({_vendor_message(exc)})") from exc
    except _VENDOR_ERRORS as exc:
        raise StoreError(f"LanceDB {action} of namespace {namespace!r} failed: {_vendor_message(exc)}") from exc


def _vendor_message(exc: BaseException) -> str:
    """The vendor's message on one line, without the Rust source locations lance appends."""
    return " ".join(_SOURCE_LOCATION.sub("", str(exc)).split())
