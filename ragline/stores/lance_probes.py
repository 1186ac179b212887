"""How many IVF partitions an indexed LanceDB query probes: the fewest that find the exact top 10 on a sample of the
namespace's own vectors, measured once per vector index (``calibrate``) and kept beside the table (``save``/``load``).

Whether a few partitions hold a query's neighbours depends on the vectors: embeddings cluster by topic, so a few of
√n partitions usually do; vectors without clusters (near-ties everywhere) need all of them. Measuring it per index
keeps recall without paying the full scan where it is not needed. The count kept is one step above the fewest that
passed, since questions lie off the stored points the sample stands on. No calibration, or one made for another
index, means every partition. A calibration names its index's kind, so the store can tell one an earlier release
made for a kind of index it no longer builds (``load``'s ``kinds``).

A result counts as found when it is one of the exact neighbours or scores as high as the tenth of them: copies of one
text (boilerplate chunks) share a vector, and any of the tied copies is as right as another. A sample whose ten
neighbours are all copies of it is left out: it would pass with any number of probes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

LADDER = (8, 16, 32, 64, 128, 256)
"""Probe counts tried, fewest first; one above half the partitions means probing all of them instead."""
TARGET_RECALL = 0.98
"""Recall@10 a probe count must reach on the sample (above the 0.95 the store promises, for the sample's error)."""
SAMPLE = 32
NEIGHBOURS = 10
TIE = 1e-5
"""Cosine difference under which two scores tie (float32 rounding between the exact scan and the index's re-rank)."""
Neighbour = tuple[str, float]
"""An id with its cosine similarity to the query."""


@dataclass(frozen=True)
class Probes:
    """A calibration of the index ``index_uuid`` of kind ``kind`` (as LanceDB reports it; "" in one an earlier
    release kept): ``nprobes`` (None: every partition) found ``recall`` on ``SAMPLE`` stored vectors."""

    index_uuid: str
    nprobes: int | None
    recall: float
    rows: int
    kind: str = ""


def load(path: Path, index_uuid: str | None, kinds: Collection[str] | None = None) -> Probes | None:
    """The calibration kept at ``path`` if it was made for this index (and, given ``kinds``, an index of one of
    them: not one an earlier release built, due to be replaced); None if missing, unreadable or stale."""
    if index_uuid is None:
        return None
    try:
        probes = Probes(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if probes.index_uuid != index_uuid or (kinds is not None and probes.kind not in kinds):
        return None
    return probes


def save(path: Path, probes: Probes) -> None:
    """Write atomically: a reader sees the old calibration or the new one."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    partial.write_text(json.dumps(asdict(probes)), encoding="utf-8")
    partial.replace(path)


def exact_neighbours(
    queries: np.ndarray, batches: Iterable[tuple[Sequence[str], np.ndarray]], k: int
) -> list[list[Neighbour]]:
    """Each query's ``k`` nearest rows by cosine (id, score), nearest first, streaming (ids, vectors) batches."""
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), "", dtype=object)
    for ids, vectors in batches:
        scores = (unit @ vectors.T) / np.linalg.norm(vectors, axis=1)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(np.asarray(ids, dtype=object), scores.shape)], axis=1)
        top = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    ranked = zip(np.take_along_axis(best_ids, order, axis=1), np.take_along_axis(best_scores, order, axis=1))
    return [[(str(i), float(s)) for i, s in zip(ids, scores) if s > -np.inf] for ids, scores in ranked]


def calibrate(
    index_uuid: str,
    kind: str,
    rows: int,
    partitions: int,
    sample_ids: Sequence[str],
    truth: Sequence[Sequence[Neighbour]],
    search: Callable[[int, int | None], list[Neighbour]],
) -> Probes:
    """One ``LADDER`` step above the fewest probes whose recall@10 reaches ``TARGET_RECALL`` (a margin for queries
    that lie off the stored points, as questions do), else every partition (None).
    ``search(i, nprobes)``: what the index finds for sample vector ``i``; ``truth``: its exact ``NEIGHBOURS + 1``
    nearest, nearest first. The sample vector itself is left out of both sides (a duplicate of it may rank above it);
    a result scoring within ``TIE`` of the tenth neighbour counts as found (a tied copy)."""
    expected = [[n for n in ranked if n[0] != own][:NEIGHBOURS] for ranked, own in zip(truth, sample_ids, strict=True)]
    # a sample among 11 or more copies of one vector finds ten tied copies with any number of probes: it says nothing
    informative = [i for i, e in enumerate(expected) if e and e[-1][1] < e[0][1] - TIE]

    def found(i: int, nprobes: int | None) -> int:
        wanted = {id for id, _ in expected[i]}
        tenth = expected[i][-1][1]
        hits = {id for id, score in search(i, nprobes) if id in wanted or score >= tenth - TIE} - {sample_ids[i]}
        return min(len(wanted), len(hits))

    def recall(nprobes: int | None) -> float:
        total = sum(found(i, nprobes) for i in informative)
        return round(total / max(1, sum(len(expected[i]) for i in informative)), 4)

    ladder = [n for n in LADDER if n <= partitions // 2]
    for step, nprobes in enumerate(ladder[:-1]):
        if recall(nprobes) >= TARGET_RECALL:
            return Probes(index_uuid, ladder[step + 1], recall(ladder[step + 1]), rows, kind)
    return Probes(index_uuid, None, recall(None), rows, kind)
