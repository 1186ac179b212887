"""Integration: ingest the committed Cranfield slice, re-run it unchanged, then edit and remove documents."""

from __future__ import annotations

import json
from pathlib import Path

from ragline.components import Components
from ragline.sources import JsonlSource
from tests.conftest import CRANFIELD

NS = "test"
EDITED = ["5", "50", "150"]
REMOVED = ["7", "170"]


def _write_corpus(path: Path, edit: bool) -> None:
    """A working copy of the slice (written to a temp dir), optionally edited."""
    with open(CRANFIELD / "corpus.jsonl", encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
        for line in src:
            record = json.loads(line)
            if edit and record["_id"] in REMOVED:
                continue
            if edit and record["_id"] in EDITED:
                record["text"] = "revised abstract: " + record["text"][: len(record["text"]) // 2]
            dst.write(json.dumps(record) + "\n")


def _index_state(c: Components) -> dict[str, tuple]:
    ids = list(c.store.list_ids(namespace=NS))
    return {
        i: (r.metadata["text"], tuple(round(float(x), 5) for x in r.values[:8]))
        for i, r in c.store.fetch(ids, namespace=NS).items()
    }


def test_cranfield_rerun_embeds_nothing_and_edits_touch_only_their_chunks(
    components: Components, tmp_path: Path
) -> None:
    from ragline.indexing.pipeline import ingest

    corpus = tmp_path / "cranfield" / "corpus.jsonl"
    corpus.parent.mkdir()
    _write_corpus(corpus, edit=False)
    source = JsonlSource(corpus, name="cranfield")

    first = ingest(components, source).stats
    assert first.documents_new + first.documents_quarantined == 200
    assert first.chunks_written >= 200
    before = _index_state(components)
    assert len(before) == components.records.journal.live_chunk_count(NS) == first.chunks_written

    again = ingest(components, source).stats
    assert (again.embeddings_computed, again.chunks_written, again.chunks_deleted) == (0, 0, 0)
    assert again.documents_unchanged == first.documents_new

    _write_corpus(corpus, edit=True)
    edited = ingest(components, source, cleanup="full").stats
    assert (edited.documents_changed, edited.documents_removed, edited.documents_new) == (3, 2, 0)
    after = _index_state(components)
    touched = tuple(f"cranfield/{d}#" for d in EDITED + REMOVED)
    assert {i: v for i, v in after.items() if not i.startswith(touched)} == {
        i: v for i, v in before.items() if not i.startswith(touched)
    }
    assert not any(i.startswith(tuple(f"cranfield/{d}#" for d in REMOVED)) for i in after)
    for doc in EDITED:
        assert after[f"cranfield/{doc}#0"][0].startswith("revised abstract")
    assert edited.embeddings_computed <= edited.chunks_written
