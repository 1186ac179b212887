"""Near-duplicate documents across runs: MinHash signatures of word shingles (datasketch's permutations), LSH over a
namespace.

- A signature is datasketch's ``affine32`` MinHash of the document's word shingles (``ragline.indexing.signatures``),
  made in the worker processes for a large batch.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ragline.config import NearDuplicateMode, RaglineConfig
from ragline.indexing.minhash_index import MinHashIndex
from ragline.indexing.signatures import forget_word_codes, minhash_signature, signature_params
from ragline.records import Document, NearDuplicate
from ragline.recordstore import DocumentRow, RecordStore

TAG_KEY = "near_duplicate_of"
"""Chunk metadata naming the original; filter near-duplicates out with ``{"near_duplicate_of": {"$exists": false}}``."""


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
        self.params = signature_params(num_perm, shingle_words)
        self._run: _RunIndex | None = None
        self._signed_ahead: dict[tuple[str, str], np.ndarray | None] = {}

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
        ``shingle_hashes``, or None when it has no words (made ahead, ``use_signatures``, or now)."""
        key = (doc.doc_id, doc.content_hash)
        if key in self._signed_ahead:
            return self._signed_ahead.pop(key)
        return minhash_signature(doc, self.num_perm, self.shingle_words)

    def use_signatures(self, signed: Mapping[tuple[str, str], np.ndarray | None]) -> None:
        """Signatures made ahead (in the worker processes, ``ragline.indexing.ahead``) by (doc id, content hash):
        ``signature`` takes them from here. Replaces what the last batch left unused."""
        self._signed_ahead = dict(signed)

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
        forget_word_codes()

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
