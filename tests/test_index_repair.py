"""Damage made to the real files, and the documented way back from it.

A lost or damaged index is reported and rebuilt from the record store and the embedding cache: ``status`` says so,
queries and the service refuse clearly, runs refuse to start, and ``ragline reconcile --rebuild`` brings back every
vector, embedding only what the cache lacks. A damaged record store stops every command with one line naming the
file and the way back; ``ragline records rebuild`` (from the index) and ``ragline records restore`` (from a
backup) each bring back the namespace exactly as it was."""

from __future__ import annotations

import gc
import random
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from ragline.cli import app
from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.errors import IndexDamaged
from ragline.indexing.health import index_health
from ragline.indexing.pipeline import ingest
from ragline.indexing.rebuild import rebuild_index
from ragline.retrieval import search
from ragline.service import create_app
from ragline.sources import DirectorySource
from ragline.testing.pinecone_server import LoopbackPinecone
from tests.conftest import SAMPLE
from tests.support.crash import read_state, state_differences

NS = "docs"
CORPUS = SAMPLE / "guides"
KEY = "repair-test-key-0123456789"
runner = CliRunner()


def cli(home: Path, *args: str, namespace: bool = True) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--home", str(home), *(["-n", NS] if namespace else [])])
    return result.exit_code, result.output


def table_dir(home: Path) -> Path:
    return home / "lancedb" / f"ns_{NS}.lance"


def delete_a_data_file(home: Path) -> None:
    sorted((table_dir(home) / "data").glob("*.lance"))[1].unlink()


def truncate_a_data_file(home: Path) -> None:
    path = sorted((table_dir(home) / "data").glob("*.lance"))[1]
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def delete_the_table_folder(home: Path) -> None:
    shutil.rmtree(table_dir(home))


def truncate_the_manifest(home: Path) -> None:
    latest = sorted((table_dir(home) / "_versions").glob("*.manifest"))[0]  # lance names versions u64::MAX - n
    with latest.open("r+b") as handle:
        handle.truncate(64)


def at_rest(home: Path) -> None:
    """Close what in-process CLI calls left open, so the SQLite files are whole on disk, as after a process exits
    (each last connection checkpoints its write-ahead log into the file and deletes it)."""
    gc.collect()
    assert not list(home.glob("*.sqlite-wal"))


def truncate_the_record_store(home: Path) -> None:
    at_rest(home)
    path = home / "records.sqlite"
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def fill_the_record_store_with_garbage(home: Path) -> None:
    """64 KiB of random bytes over the record store's pages from the fifth on (its header stays intact)."""
    at_rest(home)
    path = home / "records.sqlite"
    assert path.stat().st_size > 4 * 4096 + 65536
    with path.open("r+b") as handle:
        handle.seek(4 * 4096)
        handle.write(random.Random(9).randbytes(65536))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> Path:
    """The sample guides indexed by the CLI in batches of 3 documents: one LanceDB data file per batch."""
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    monkeypatch.setenv("RAGLINE_BATCH_SIZE", "3")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    home = tmp_path / "home"
    code, output = cli(home, "ingest", str(CORPUS))
    assert code == 0, output
    assert len(list((table_dir(home) / "data").glob("*.lance"))) > 2
    return home


@pytest.mark.parametrize(
    "damage",
    [
        delete_a_data_file,
        pytest.param(truncate_a_data_file, marks=pytest.mark.slow),
        pytest.param(delete_the_table_folder, marks=pytest.mark.slow),
        pytest.param(truncate_the_manifest, marks=pytest.mark.slow),
    ],
)
def test_a_damaged_lancedb_index_is_reported_refused_and_rebuilt_with_nothing_lost(
    home: Path, damage: Callable[[Path], None]
) -> None:
    clean = read_state(home, NS)
    damage(home)

    code, output = cli(home, "status")
    assert code == 0
    damaged = [line for line in output.splitlines() if line.startswith("damaged — run `ragline reconcile --rebuild")]
    assert len(damaged) == 1, output
    assert f"{len(clean.vectors)} vectors in the index" not in output  # not the manifest's stale count

    for command in (
        ["query", "chunk size", "--mode", "dense"],
        ["ingest", str(CORPUS)],
        ["ingest", str(CORPUS), "--full"],
    ):
        code, output = cli(home, *command)
        assert code == 1 and "Traceback" not in output, output
        assert "is damaged" in output and "ragline reconcile --rebuild -n docs" in " ".join(output.split())

    code, output = cli(home, "reconcile", "--rebuild")
    assert code == 0, output
    assert f"{len(clean.vectors)} chunks written (0 embedded" in output

    assert state_differences(read_state(home, NS), clean) == []
    code, output = cli(home, "status")
    assert code == 0 and "damaged" not in output and f"{len(clean.vectors)} vectors in the index" in output
    code, output = cli(home, "ingest", str(CORPUS))
    assert code == 0 and "Chunks written                │     0" in output


def test_the_service_answers_503_while_the_index_is_damaged_and_200_once_rebuilt(home: Path) -> None:
    config = RaglineConfig(
        home=home, namespace=NS, embedder="hashing", service_api_keys={SecretStr(KEY): [NS]}, batch_size=3
    )
    c = build_components(config, HashingEmbedder())
    body = {"query": "how large should chunks be?", "namespace": NS, "mode": "dense"}
    with TestClient(create_app(config, c)) as client:
        assert client.post("/query", json=body, headers={"X-API-Key": KEY}).status_code == 200
        delete_a_data_file(home)
        refused = client.post("/query", json={**body, "top_k": 3}, headers={"X-API-Key": KEY})
        assert refused.status_code == 503, refused.text
        assert "damaged" in refused.json()["detail"] and "lancedb" not in refused.text.lower()
        rebuild_index(c, NS)
        assert client.post("/query", json={**body, "top_k": 4}, headers={"X-API-Key": KEY}).status_code == 200
    c.close()


def test_a_rebuild_embeds_exactly_what_the_embedding_cache_lost(home: Path) -> None:
    clean = read_state(home, NS)
    delete_the_table_folder(home)
    db = sqlite3.connect(home / "embeddings.sqlite")
    with db:
        db.execute("DELETE FROM embeddings WHERE rowid IN (SELECT rowid FROM embeddings ORDER BY text_hash LIMIT 7)")
    db.close()
    c = build_components(RaglineConfig(home=home, namespace=NS, embedder="hashing"), HashingEmbedder())
    result = rebuild_index(c, NS)
    c.close()
    assert (result.embeddings_computed, result.chunks_written, result.dropped) == (7, len(clean.vectors), False)
    assert state_differences(read_state(home, NS), clean) == []


@pytest.fixture
def pinecone() -> Iterator[LoopbackPinecone]:
    with LoopbackPinecone(api_key="pc-repair") as server:
        yield server


def test_a_deleted_pinecone_namespace_is_reported_refused_and_rebuilt(
    pinecone: LoopbackPinecone, tmp_path: Path, embedder: HashingEmbedder
) -> None:
    config = RaglineConfig(
        home=tmp_path / "home",
        namespace=NS,
        embedder="hashing",
        store="pinecone",
        pinecone_api_key="pc-repair",
        pinecone_host=pinecone.url,
        consistency_wait_s=0,
    )
    c = build_components(config, embedder)
    ingest(c, DirectorySource(CORPUS))
    clean = pinecone.records(config.pinecone_index, NS)
    assert index_health(c.store, c.records.journal, NS).lost is None

    c.store.delete(namespace=NS, delete_all=True)  # an operator deletes the namespace
    assert "0 vectors" in str(index_health(c.store, c.records.journal, NS).lost)
    with pytest.raises(IndexDamaged, match="reconcile --rebuild"):
        search(c, "metadata filters", namespace=NS, mode="dense")
    with pytest.raises(IndexDamaged):
        ingest(c, DirectorySource(CORPUS))

    result = rebuild_index(c, NS)
    rebuilt = pinecone.records(config.pinecone_index, NS)
    assert (result.chunks_written, result.embeddings_computed) == (len(clean), 0)
    assert sorted(rebuilt) == sorted(clean)
    assert all(
        np.array_equal(rebuilt[i].values, clean[i].values) and rebuilt[i].metadata == clean[i].metadata for i in clean
    )
    assert search(c, "metadata filters", namespace=NS, mode="dense").hits
    c.close()


RECORD_STORE_COMMANDS: list[tuple[list[str], bool]] = [
    (["status"], True),
    (["reconcile", "--dry-run"], True),
    (["reconcile"], True),
    (["reconcile", "--rebuild"], True),
    (["ingest", str(CORPUS)], True),
    (["query", "chunk size"], True),
    (["backfill", "--status"], True),
    (["versions", "list", NS], False),
    (["versions", "rollback", NS], False),
]


def assert_every_command_stops_with_one_line(home: Path) -> None:
    """Each command exits 1 with one line: the damaged file and both ways back, nothing else (no "in sync")."""
    for command, namespaced in RECORD_STORE_COMMANDS:
        code, output = cli(home, *command, namespace=namespaced)
        lines = output.strip().splitlines()
        assert code == 1 and len(lines) == 1, (command, output)
        assert lines[0].startswith(f"error: record store {home / 'records.sqlite'} is damaged ("), (command, output)
        assert lines[0].endswith(
            "restore it from a backup (`ragline records restore BACKUP`), or rebuild it from the index "
            "(`ragline records rebuild`)"
        ), (command, output)
    code, output = cli(home, "records", "backup", str(home / "backup.sqlite"), namespace=False)
    assert code == 1 and output.strip() == (
        f"error: {home / 'records.sqlite'} is damaged (database disk image is malformed): it cannot be backed up"
    )
    assert not (home / "backup.sqlite").exists()


@pytest.mark.parametrize(
    "damage", [pytest.param(truncate_the_record_store, marks=pytest.mark.slow), fill_the_record_store_with_garbage]
)
def test_a_damaged_record_store_stops_every_command_and_is_rebuilt_from_the_index(
    home: Path, damage: Callable[[Path], None]
) -> None:
    clean = read_state(home, NS)
    damage(home)
    assert_every_command_stops_with_one_line(home)

    result = runner.invoke(app, ["records", "rebuild", "--home", str(home)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "moved the damaged records.sqlite aside to" in output
    assert f"{len(clean.documents)} documents and {len(clean.vectors)} chunks recorded" in output
    assert "index and record store in sync" in output
    assert len(list(home.glob("records.sqlite.damaged-*"))) == 1  # kept, not deleted

    assert state_differences(read_state(home, NS), clean) == []
    code, output = cli(home, "status")
    assert code == 0 and "damaged" not in output, output
    code, output = cli(home, "ingest", str(CORPUS))  # every document recognised as unchanged: nothing to write
    assert code == 0 and "Chunks written                │     0" in output, output
    assert "Embeddings computed           │     0" in output, output


def test_a_damaged_record_store_is_restored_from_its_backup(home: Path, tmp_path: Path) -> None:
    clean = read_state(home, NS)
    backup = tmp_path / "backups" / "records.sqlite"
    code, output = cli(home, "records", "backup", str(backup), namespace=False)
    assert code == 0, output
    fill_the_record_store_with_garbage(home)
    assert_every_command_stops_with_one_line(home)

    code, output = cli(home, "records", "restore", str(backup), namespace=False)
    assert code == 0, output
    assert "moved the previous record store aside to" in output and f"ragline reconcile -n {NS}" in output

    assert state_differences(read_state(home, NS), clean) == []
    code, output = cli(home, "reconcile")
    assert code == 0 and "0 unfinished runs rolled back: in sync;" in output, output


def test_a_damaged_backup_is_refused_and_the_record_store_left_as_it_was(home: Path, tmp_path: Path) -> None:
    clean = read_state(home, NS)
    backup = tmp_path / "records.sqlite"
    at_rest(home)
    shutil.copyfile(home / "records.sqlite", backup)
    truncate_the_record_store(backup.parent)

    code, output = cli(home, "records", "restore", str(backup), namespace=False)
    assert code == 1 and len(output.strip().splitlines()) == 1, output
    assert f"backup {backup} is damaged too" in output
    assert state_differences(read_state(home, NS), clean) == []
