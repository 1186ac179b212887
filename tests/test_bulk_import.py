"""Pinecone bulk-import export: the Parquet layout read back with pyarrow, matched against the record store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.errors import ConfigError
from ragline.indexing.backfill import backfill_spec, run_backfill
from ragline.indexing.bulk_import import SCHEMA, parquet_part, part_path
from ragline.indexing.journal import index_metadata, vectors_for
from ragline.indexing.pipeline import ingest
from ragline.sources import JsonlSource
from ragline.stores.base import VectorRecord
from ragline.testing.pinecone_server import LoopbackPinecone
from tests.support.backends import API_KEY, pinecone_config
from tests.test_backfill import NS, cranfield_jsonl


@pytest.fixture
def config(config: RaglineConfig) -> Iterator[RaglineConfig]:
    """Exports are for Pinecone: the real SDK against a loopback server."""
    with LoopbackPinecone(api_key=API_KEY) as server:
        yield pinecone_config(config, server)


def test_export_is_refused_on_lancedb(tmp_path: Path, models_dir: Path, embedder) -> None:
    local = RaglineConfig(home=tmp_path / "home", model_cache_dir=models_dir, namespace=NS, embedder="hashing")
    c = build_components(local, embedder=embedder)
    with pytest.raises(ConfigError, match="--export-parquet writes Pinecone bulk-import files, but the store is"):
        export(c, cranfield_jsonl(tmp_path, 3), tmp_path / "import")
    assert not (tmp_path / "import").exists() and c.records.backfills.of_namespace(NS) == []
    c.close()


@pytest.fixture
def exporting(config: RaglineConfig, embedder) -> Iterator[Components]:
    c = build_components(config.model_copy(update={"backfill_partition_size": 5}), embedder=embedder)
    yield c
    c.close()


def export(c: Components, path: Path, out: Path):
    source = JsonlSource(path)
    return run_backfill(c, source, backfill_spec(c, source, path, export_dir=out))


def test_export_writes_the_pinecone_import_layout_matching_the_record_store(
    exporting: Components, tmp_path: Path
) -> None:
    c = exporting
    out = tmp_path / "import"
    result = export(c, cranfield_jsonl(tmp_path, 12), out)

    files = sorted(p.name for p in (out / NS).iterdir())
    assert files == ["part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]  # no temporary files left
    assert [p.name for p in out.iterdir()] == [NS]  # one folder per namespace
    table = pa.concat_tables([pq.read_table(out / NS / name) for name in files])
    assert table.schema.equals(SCHEMA)
    assert table.schema.field("values").type == pa.list_(pa.float32())

    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == result.stats.chunks_written
    assert sorted(ids) == c.records.journal.live_chunk_ids(
        NS
    )  # recorded live, so the record store matches after import
    rows = c.records.journal.chunk_rows(NS, ids)
    expected = vectors_for(c, [rows[i] for i in ids])
    assert np.allclose(np.array(table.column("values").to_pylist(), dtype=np.float32), expected, atol=1e-6)
    for chunk_id, metadata in zip(ids, table.column("metadata").to_pylist()):
        assert json.loads(metadata) == index_metadata(rows[chunk_id].text, rows[chunk_id].metadata)
    assert c.store.describe_namespace(NS).vector_count == 0  # nothing upserted: Pinecone's import loads it


def test_export_refuses_a_namespace_that_already_holds_documents(exporting: Components, tmp_path: Path) -> None:
    c = exporting
    path = cranfield_jsonl(tmp_path, 3)
    ingest(c, JsonlSource(path), namespace=NS)
    with pytest.raises(ConfigError, match="needs a new namespace"):
        export(c, path, tmp_path / "import")
    assert not (tmp_path / "import").exists()


def test_rerun_after_export_keeps_every_file(exporting: Components, tmp_path: Path) -> None:
    c = exporting
    out = tmp_path / "import"
    path = cranfield_jsonl(tmp_path, 12)
    export(c, path, out)
    before = {p.name: p.read_bytes() for p in (out / NS).iterdir()}
    again = export(c, path, out)
    assert all(o.skipped for o in again.outcomes)
    assert {p.name: p.read_bytes() for p in (out / NS).iterdir()} == before


def assert_export_matches_the_record_store(c: Components, out: Path) -> None:
    """The export's files hold every live chunk once, each with its recorded vector: an import gives the index the
    record store expects."""
    table = pa.concat_tables([pq.read_table(p) for p in sorted((out / NS).glob("*.parquet"))])
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) and sorted(ids) == c.records.journal.live_chunk_ids(NS)
    rows = c.records.journal.chunk_rows(NS, ids)
    expected = vectors_for(c, [rows[i] for i in ids])
    assert np.allclose(np.array(table.column("values").to_pylist(), dtype=np.float32), expected, atol=1e-6)
    assert sorted(p.name for p in (out / NS).iterdir()) == sorted(p.name for p in (out / NS).glob("part-*.parquet"))


def test_a_partition_exported_again_after_its_documents_changed_holds_all_of_them(
    exporting: Components, tmp_path: Path
) -> None:
    c = exporting
    out = tmp_path / "import"
    path = cranfield_jsonl(tmp_path, 12)
    export(c, path, out)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    edited = json.loads(lines[1]) | {"text": "An edited abstract about supersonic flutter of thin wings."}
    new = json.dumps({"_id": "new0", "text": "A brand new document about boundary layer suction."}) + "\n"
    path.write_text(new + lines[0] + json.dumps(edited) + "\n" + "".join(lines[2:]), encoding="utf-8")
    again = export(c, path, out)
    assert not again.outcomes[0].skipped and again.stats.embeddings_computed == 2  # the others from the cache
    assert pq.read_metadata(out / NS / "part-000000.parquet").num_rows > 2  # not only the new and the edited one
    assert_export_matches_the_record_store(c, out)


def test_a_part_that_could_not_be_moved_into_place_is_written_whole_by_the_next_run(
    exporting: Components, tmp_path: Path
) -> None:
    c = exporting
    out = tmp_path / "import"
    path = cranfield_jsonl(tmp_path, 12)
    (out / NS / "part-000001.parquet").mkdir(parents=True)  # the rename of partition 1's file fails
    with pytest.raises(OSError):
        export(c, path, out)
    assert sorted(p.name for p in (out / NS).iterdir()) == ["part-000000.parquet", "part-000001.parquet"]
    (out / NS / "part-000001.parquet").rmdir()
    export(c, path, out)
    assert_export_matches_the_record_store(c, out)


def _records(n: int, start: int = 0) -> list[VectorRecord]:
    vectors = np.eye(n + start, 4, dtype=np.float32)[start:]
    return [VectorRecord(f"doc/{i}#0", v, {"text": f"t{i}", "n": i}) for i, v in enumerate(vectors, start)]


def test_a_part_appears_only_when_complete_and_an_empty_or_failed_part_keeps_the_earlier_file(tmp_path: Path) -> None:
    path = part_path(tmp_path, "ns", 7)
    assert path == tmp_path / "ns" / "part-000007.parquet"
    with parquet_part(path) as part:
        assert part.write(_records(2)) == 2
        assert not path.exists()  # still a hidden temporary file
        part.write(_records(1, start=2))
    assert pq.read_table(path).column("id").to_pylist() == ["doc/0#0", "doc/1#0", "doc/2#0"]
    written = path.read_bytes()

    with parquet_part(path):  # a redo that found nothing new to export
        pass
    with pytest.raises(RuntimeError), parquet_part(path) as part:
        part.write(_records(1))
        raise RuntimeError("crash mid-partition")
    assert path.read_bytes() == written
    assert sorted(p.name for p in path.parent.iterdir()) == ["part-000007.parquet"]
    assert part_path(tmp_path, "", 0).parent.name == "__default__"
