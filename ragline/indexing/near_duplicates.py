"""Near-duplicate documents across runs: MinHash signatures of word shingles (datasketch's permutations), LSH over a
namespace.

- A signature is datasketch's ``affine32`` MinHash of the document's word shingles: each distinct word is hashed
  once (BLAKE2b, 64 bits, cached), a shingle's hash mixes its words' codes with numpy (``shingle_hashes``), and
  datasketch permutes those hashes 4,096 shingles at a time. datasketch's own hashing (SHA-1 of every shingle in
  Python) cost more than embedding with the hashing embedder (a million chunks: 179 s).

- A new or changed document is compared with the namespace's *originals*: the live documents their indexing run
  did not flag, and the documents this run accepted so far. The first one indexed stays the original.
- Signatures are stored in the record store per (doc_id, content hash, parameters), so documents indexed in earlier
  runs are compared without being read again; the LSH is rebuilt from them once per run, when first needed. Which
  signatures count follows the live documents, so commit, rollback and removal need no step of their own.
- A flagged document is recorded (doc_id, duplicate_of, estimated similarity, run_id) and, by ``near_duplicates``,
  indexed with ``near_duplicate_of`` in its chunks' metadata (``tag``) or left out of the index (``skip``). An
  indexed document that changes into a near-duplicate is tagged even under ``skip``: skipping never drops what is
  already indexed.
- An unchanged tagged document is planned again when its original is no longer live, has changed, or its
  similarity is below the threshold now; a skipped one is compared again on every run that sees it. Documents
  indexed before detection was on (or under other parameters) get a signature on the next run that sees them.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np

from ragline.config import NearDuplicateMode, RaglineConfig
from ragline.indexing.minhash_index import MinHashIndex
from ragline.records import Document, NearDuplicate
from ragline.recordstore import DocumentRow, RecordStore

TAG_KEY = "near_duplicate_of"
"""Chunk metadata naming the original; filter near-duplicates out with ``{"near_duplicate_of": {"$exists": false}}``."""
_SCHEME = "affine32"
"""datasketch's permutation scheme: 32-bit hash values, stored as little-endian uint32."""
_HASH = "blake2b64mix"
"""How a shingle is hashed (``shingle_hashes``); part of the stored signatures' parameters."""
_SEED = 1
_WORDS = re.compile(r"\w+")
_WORD_CODES: dict[str, int] = {}
_WORD_CODES_MAX = 1 << 17
"""Distinct words whose code is kept (about 15 MB; cleared when full and at the end of a run)."""
_STEP = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)
_BLOCK = 4_096
"""Shingles permuted at a time."""
_WORKERS_FROM = 256
"""Documents from which a batch is signed in worker processes (below, in this process)."""


def _words(doc: Document) -> list[str]:
    return _WORDS.findall(f"{doc.title}\n{doc.text}".lower())


def shingles(doc: Document, words_per_shingle: int) -> set[bytes]:
    """The document's word shingles (title and text, lower-cased); a text shorter than one shingle is one shingle."""
    words = _words(doc)
    k = min(words_per_shingle, len(words))
    return {" ".join(words[i : i + k]).encode("utf-8") for i in range(len(words) - k + 1)} if words else set()


def shingle_hashes(doc: Document, words_per_shingle: int) -> np.ndarray:
    """A 32-bit hash of each of the document's shingles (as ``shingles``, repeats included): the words' 64-bit
    codes (BLAKE2b, computed once per distinct word) combined position by position and mixed, so equal shingles hash
    equal in every process."""
    words = _words(doc)
    if not words:
        return np.zeros(0, dtype=np.uint32)
    if len(_WORD_CODES) > _WORD_CODES_MAX:
        _WORD_CODES.clear()
    get = _WORD_CODES.get
    codes = [get(w) for w in words]
    if None in codes:
        codes = [_WORD_CODES.setdefault(w, _word_code(w)) if c is None else c for w, c in zip(words, codes)]
    words_codes = np.array(codes, dtype=np.uint64)
    k = min(words_per_shingle, len(words))
    count = len(words) - k + 1
    hashes = np.zeros(count, dtype=np.uint64)
    for offset in range(k):  # uint64 arithmetic wraps: a polynomial in the words' codes
        hashes = hashes * _STEP + words_codes[offset : offset + count] + np.uint64(1)
    hashes ^= hashes >> np.uint64(31)
    hashes *= _MIX
    return (hashes >> np.uint64(32)).astype(np.uint32)


def _word_code(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def minhash_signature(doc: Document, num_perm: int, shingle_words: int) -> np.ndarray | None:
    """The document's MinHash values (datasketch ``affine32``, uint32, one per permutation) over its
    ``shingle_hashes``, or None when it has no words."""
    from datasketch import MinHash

    hashes = shingle_hashes(doc, shingle_words).tolist()
    if not hashes:
        return None
    minhash = MinHash(num_perm, _SEED, hashfunc=int, permutations=_permutations(num_perm), scheme=_SCHEME)
    for start in range(0, len(hashes), _BLOCK):  # a block is _BLOCK × num_perm values at once
        minhash.update_batch(hashes[start : start + _BLOCK])
    return minhash.hashvalues


@cache
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """The permutations every signature shares (datasketch is imported here, when first needed: ~1 s)."""
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=_SEED, scheme=_SCHEME).permutations


def _sign(num_perm: int, shingle_words: int, documents: Sequence[Document]) -> list[np.ndarray | None]:
    """``minhash_signature`` of each document (what a signing process runs)."""
    return [minhash_signature(doc, num_perm, shingle_words) for doc in documents]


def lsh_bands(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """LSH (bands, rows per band) under which a pair at ``threshold`` becomes a candidate with probability ``recall``.

    Candidates are confirmed by their estimated Jaccard similarity, so missing a pair costs more than checking a
    few extra: datasketch's own choice (equal weights) finds a pair at 0.9 only 31 % of the time with 128
    permutations; this one (12 bands of 10 rows) 99.4 %.
    """
    for rows in range(num_perm // 2, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


@dataclass(frozen=True)
class Verdict:
    """A checked document (tagged if it is a near-duplicate), its signature, and its flag if any."""

    document: Document
    signature: np.ndarray | None
    flag: NearDuplicate | None

    @property
    def skipped(self) -> bool:
        """A near-duplicate left out of the index."""
        return self.flag is not None and self.flag.action == "skipped"


@dataclass
class _RunIndex:
    """One run's view of a namespace's originals (``MinHashIndex``); the stored ones are read at the first
    comparison."""

    namespace: str
    run_id: str
    originals: MinHashIndex
    touched: set[str] = field(default_factory=set)
    stored_read: bool = False
    unsaved_signatures: list[tuple[str, str, bytes]] = field(default_factory=list)
    unsaved_flags: list[NearDuplicate] = field(default_factory=list)


class NearDuplicateDetector:
    """Flags documents that nearly duplicate an original in the same namespace, keeping state in the record store.

    One planner per process at a time (both ingest drivers plan groups in order). Planners in several processes
    (Dask workers) each compare with the originals stored when they first compare in a run, plus their own.
    """

    def __init__(self, mode: NearDuplicateMode, threshold: float, num_perm: int, shingle_words: int) -> None:
        self.mode = mode
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        self.params = f"{_SCHEME}/{num_perm}/{_SEED}/{shingle_words}w/{_HASH}"
        self._run: _RunIndex | None = None
        self._signed_ahead: dict[tuple[str, str], np.ndarray | None] = {}
        self._pool: ProcessPoolExecutor | None = None

    @classmethod
    def from_config(cls, config: RaglineConfig) -> NearDuplicateDetector | None:
        """The configured detector, or None when ``near_duplicates`` is off."""
        if config.near_duplicates == "off":
            return None
        return cls(
            config.near_duplicates,
            config.near_duplicate_threshold,
            config.near_duplicate_num_perm,
            config.near_duplicate_shingle_words,
        )

    def signature(self, doc: Document) -> np.ndarray | None:
        """The document's MinHash values (datasketch ``affine32``, uint32, one per permutation) over its
        ``shingle_hashes``, or None when it has no words (signed ahead by ``sign_ahead``, or now)."""
        key = (doc.doc_id, doc.content_hash)
        if key in self._signed_ahead:
            return self._signed_ahead.pop(key)
        return minhash_signature(doc, self.num_perm, self.shingle_words)

    def sign_ahead(self, documents: Sequence[Document]) -> None:
        """Sign a batch's documents now, in worker processes when the batch is large (one per core; signing is
        CPU work that would otherwise hold this process's interpreter from the embedder): ``signature`` then takes
        them from here. Replaces what the last batch left unused."""
        self._signed_ahead.clear()
        cores = os.cpu_count() or 1
        if len(documents) < _WORKERS_FROM or cores < 2:
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn"))
        slices = [documents[i::cores] for i in range(cores)]
        signed = self._pool.map(_sign, [self.num_perm] * cores, [self.shingle_words] * cores, slices)
        for part, signatures in zip(slices, signed):
            self._signed_ahead.update(((d.doc_id, d.content_hash), sig) for d, sig in zip(part, signatures))

    def close(self) -> None:
        """Stop the signing processes, if any were started."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    # --- one run -------------------------------------------------------------------------------------------------

    def _index(self, namespace: str, run_id: str) -> _RunIndex:
        if self._run is None or (self._run.namespace, self._run.run_id) != (namespace, run_id):
            bands, rows = lsh_bands(self.threshold, self.num_perm)
            self._run = _RunIndex(namespace, run_id, MinHashIndex(bands, rows, self.num_perm))
        return self._run

    def unchanged_to_replan(
        self,
        records: RecordStore,
        run_id: str,
        namespace: str,
        documents: Sequence[Document],
        live: Mapping[str, DocumentRow],
    ) -> set[str]:
        """Unchanged documents whose near-duplicate flag no longer holds; signs unchanged originals lacking one."""
        run = self._index(namespace, run_id)
        same = [d for d in documents if d.doc_id in live and live[d.doc_id].content_hash == d.content_hash]
        if not same:
            return set()
        flags = records.near_duplicates.live_flags(namespace, [d.doc_id for d in same])
        flagged_originals = sorted({f.duplicate_of for f in flags.values()})
        originals = records.near_duplicates.original_hashes(namespace, flagged_originals) if flagged_originals else {}
        stale = {
            f.doc_id
            for f in flags.values()
            if f.similarity < self.threshold
            or f.duplicate_of in run.touched
            or originals.get(f.duplicate_of) != f.duplicate_of_hash
        }
        signed = records.near_duplicates.signature_hashes(namespace, self.params, [d.doc_id for d in same])
        for doc in same:
            if (
                doc.doc_id not in flags
                and doc.doc_id not in run.touched
                and (doc.doc_id, doc.content_hash) not in signed
            ):
                signature = self.signature(doc)
                if signature is not None:
                    self._add_original(run, doc, signature)
        return stale

    def check(self, records: RecordStore, run_id: str, namespace: str, doc: Document, *, indexed: bool) -> Verdict:
        """Compare a new or changed document with the originals; a near-duplicate comes back tagged or to skip.

        ``indexed``: a version of the document is live (it is then tagged, never skipped). Call ``accept`` once the
        document goes ahead (indexed or skipped).
        """
        run = self._index(namespace, run_id)
        run.touched.add(doc.doc_id)
        self._read_stored(records, run)
        run.originals.remove(doc.doc_id)
        signature = self.signature(doc)
        best: tuple[float, str] | None = None
        if signature is not None:
            values = signature
            for candidate in run.originals.candidates(values):
                similarity = float(np.count_nonzero(values == run.originals.signature(candidate))) / len(values)
                if similarity >= self.threshold and (best is None or (similarity, candidate) > best):
                    best = (similarity, candidate)
        if best is None:
            return Verdict(doc, signature, None)
        similarity, original = best
        action = "skipped" if self.mode == "skip" and not indexed else "tagged"
        flag = NearDuplicate(doc.doc_id, original, round(similarity, 4), action, run.originals.content_hash(original))
        if action == "tagged":
            doc = replace(doc, metadata={**doc.metadata, TAG_KEY: original})
        return Verdict(doc, signature, flag)

    def accept(self, run_id: str, namespace: str, verdict: Verdict) -> None:
        """Settle a checked document that goes ahead: record its flag, or make it an original."""
        run = self._index(namespace, run_id)
        if verdict.flag is not None:
            run.unsaved_flags.append(verdict.flag)
        elif verdict.signature is not None:
            self._add_original(run, verdict.document, verdict.signature)

    def flush(self, records: RecordStore, run_id: str, namespace: str) -> int:
        """Write what this run found since the last flush; returns how many documents it flagged."""
        run = self._index(namespace, run_id)
        if run.unsaved_signatures:
            records.near_duplicates.save_signatures(namespace, self.params, run_id, run.unsaved_signatures)
        if run.unsaved_flags:
            records.near_duplicates.record(run_id, namespace, run.unsaved_flags)
        flagged = len(run.unsaved_flags)
        run.unsaved_signatures, run.unsaved_flags = [], []
        return flagged

    def end_run(self, records: RecordStore) -> None:
        """Once the run's batches are done: save what is still unsaved (signatures made for unchanged originals in
        batches that had nothing to index), then drop the run's index (about 1 KB a document) and the word codes
        before the commit's housekeeping needs the memory. A later comparison would rebuild them."""
        if self._run is not None:
            self.flush(records, self._run.run_id, self._run.namespace)
        self._run = None
        self._signed_ahead.clear()
        _WORD_CODES.clear()

    def _read_stored(self, records: RecordStore, run: _RunIndex) -> None:
        """Add the stored originals to the run's index, once, at its first comparison (those this run signed or
        touched before keep their newer state)."""
        if run.stored_read:
            return
        records.near_duplicates.prune_signatures(run.namespace, self.params, run.run_id)
        for doc_id, content_hash, blob in records.near_duplicates.original_signatures(
            run.namespace, self.params, run.run_id
        ):
            if doc_id not in run.touched and doc_id not in run.originals:
                run.originals.insert(doc_id, content_hash, np.frombuffer(blob, dtype="<u4"))
        run.stored_read = True

    def _add_original(self, run: _RunIndex, doc: Document, signature: np.ndarray) -> None:
        run.originals.insert(doc.doc_id, doc.content_hash, signature)
        run.unsaved_signatures.append((doc.doc_id, doc.content_hash, signature.astype("<u4").tobytes()))
