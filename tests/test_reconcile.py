"""Drift injected directly into the index is found and repaired from the record store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ragline.components import Components
from ragline.indexing.reconcile import reconcile
from ragline.stores.base import VectorRecord
from tests.test_ingest import NS, corpus, run, snapshot


def test_drift_is_reported_then_repaired(components: Components, tmp_path: Path) -> None:
    run(components, corpus(tmp_path))
    clean = snapshot(components)
    assert reconcile(components, NS).in_sync

    ids = sorted(clean)
    components.store.delete(namespace=NS, ids=ids[:2])  # lost vectors
    orphan = VectorRecord("docs/ghost.md#0", np.eye(1, 384, dtype=np.float32)[0], {"text": "ghost"})
    components.store.upsert([orphan], namespace=NS)  # a vector no record knows
    tampered = components.store.fetch([ids[3]], namespace=NS)[ids[3]]
    components.store.upsert(
        [VectorRecord(ids[3], tampered.values, {**tampered.metadata, "title": "edited"})], namespace=NS
    )

    found = reconcile(components, NS, repair=False)
    assert (found.missing, found.orphans, found.different, found.repaired) == (
        ids[:2],
        ["docs/ghost.md#0"],
        [ids[3]],
        False,
    )
    assert snapshot(components) != clean

    fixed = reconcile(components, NS)
    assert fixed.repaired and snapshot(components) == clean
    assert reconcile(components, NS).in_sync
