"""Drift injected directly into the index is found and repaired from the record store, on LanceDB and on lagging
Pinecone; reconciliation refuses to delete on a guess (a record store that does not know the namespace, too many
orphans) and a dry run lists the crashed runs a repair would roll back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragline.cli import app
from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.errors import ReconcileRefused
from ragline.indexing.journal import open_run
from ragline.indexing.pipeline import write_batches
from ragline.indexing.reconcile import reconcile
from ragline.indexing.refresh import RefreshTarget, refresh
from ragline.indexing.steps import DirectSteps
from ragline.sources import DirectorySource
from ragline.stores.base import VectorRecord
from ragline.testing.pinecone_server import LoopbackPinecone
from tests.support.backends import API_KEY, INDEX, pinecone_config
from tests.test_ingest import NS, corpus, run, snapshot, write


@pytest.fixture
def config(both_stores_config: RaglineConfig) -> RaglineConfig:
    """Every test here runs on LanceDB and on the Pinecone SDK against a loopback server with a write lag."""
    return both_stores_config


def ghost(n: int = 0) -> VectorRecord:
    return VectorRecord(f"docs/ghost.md#{n}", np.eye(1, 384, n, dtype=np.float32)[0], {"text": "ghost"})


def test_drift_is_reported_then_repaired(components: Components, tmp_path: Path) -> None:
    run(components, corpus(tmp_path))
    clean = snapshot(components)
    assert reconcile(components, NS).in_sync

    ids = sorted(clean)
    components.store.delete(namespace=NS, ids=ids[:2])  # lost vectors
    components.store.upsert([ghost()], namespace=NS)  # a vector no record knows
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
    assert found.refusal and "more than reconcile_max_orphan_fraction (5%)" in found.refusal  # 1 of 11 is 9 %
    drifted = snapshot(components)
    assert drifted != clean

    with pytest.raises(ReconcileRefused, match="rerun with --force"):
        reconcile(components, NS)
    assert snapshot(components) == drifted  # a refusal writes nothing

    fixed = reconcile(components, NS, force=True)
    assert fixed.repaired and snapshot(components) == clean
    assert fixed.write_units > 0 if components.config.store_kind == "pinecone" else fixed.write_units == 0
    assert reconcile(components, NS).in_sync


def test_orphans_within_the_threshold_are_deleted_without_force(
    config: RaglineConfig,
    embedder,
    tmp_path: Path,
) -> None:
    c = build_components(config.model_copy(update={"reconcile_max_orphan_fraction": 0.2}), embedder=embedder)
    run(c, corpus(tmp_path))
    clean = snapshot(c)
    c.store.upsert([ghost(0), ghost(1)], namespace=NS)  # 2 of 13
    report = reconcile(c, NS)
    assert report.orphans == ["docs/ghost.md#0", "docs/ghost.md#1"] and report.repaired
    assert snapshot(c) == clean
    c.close()


def test_a_host_whose_record_store_knows_nothing_deletes_nothing(tmp_path: Path, models_dir: Path, embedder) -> None:
    """Host A indexes a namespace; host B (same Pinecone index, empty home) must neither reconcile nor refresh it
    into deleting A's vectors, even when forced; a dry run only reports."""
    root = corpus(tmp_path)
    with LoopbackPinecone(api_key=API_KEY, write_lag_s=0.1) as server:
        home = {h: RaglineConfig(home=tmp_path / h, model_cache_dir=models_dir, namespace=NS) for h in "ab"}
        a = build_components(pinecone_config(home["a"], server), embedder=embedder)
        b = build_components(pinecone_config(home["b"], server), embedder=embedder)
        run(a, root)
        live = snapshot(a)
        server.clear_log()

        report = reconcile(b, NS, repair=False)
        assert (report.expected, report.indexed, len(report.orphans)) == (0, len(live), len(live))
        assert report.refusal and "no committed chunks" in report.refusal
        for force in (False, True):
            with pytest.raises(ReconcileRefused, match="no committed chunks"):
                reconcile(b, NS, force=force)
        with pytest.raises(ReconcileRefused, match="no committed chunks"):
            refresh(b, [RefreshTarget(root, NS, 3600.0)])

        assert server.count("delete") == server.count("upsert") == 0
        assert set(server.records(INDEX, NS)) == set(live)
        a.close()
        b.close()


def test_dry_run_lists_crashed_runs_without_rolling_them_back(components: Components, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    run(components, root)
    write(root, {"extra.md": "# Extra\n\nOnly in the crashed run."})
    crashed = open_run(components, NS, "docs")
    write_batches(DirectSteps(components), crashed, DirectorySource(root, name="docs").items(), batch_size=10)

    report = reconcile(components, NS, repair=False)
    assert (report.unfinished_runs, report.runs_rolled_back) == ([crashed.run_id], [])
    assert report.crashed_runs == [crashed.run_id] and not report.in_sync  # the crashed run still needs its rollback
    assert not (report.orphans or report.different) and report.refusal is None  # what it wrote is the rollback's
    assert components.records.journal.unfinished_runs(NS) == [crashed.run_id]
    assert "docs/extra.md#0" in snapshot(components)  # still there: a dry run writes nothing

    repaired = reconcile(components, NS)
    assert repaired.runs_rolled_back == [crashed.run_id]
    assert components.records.journal.run_status(crashed.run_id) == "rolled_back"
    assert "docs/extra.md#0" not in snapshot(components)


def test_cli_reconcile_refuses_in_one_line_with_exit_status_1(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    root, home = corpus(tmp_path), str(tmp_path / "home")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(root), "--home", home, "-n", "docs", "--no-flow"]).exit_code == 0
    c = build_components(RaglineConfig(home=Path(home), namespace="docs", model_cache_dir=models_dir))
    c.store.upsert([ghost()], namespace="docs")
    c.close()

    dry = runner.invoke(app, ["reconcile", "--home", home, "-n", "docs", "--dry-run"])
    assert dry.exit_code == 1, dry.output  # not in sync
    assert (
        "1 orphaned; 0 crashed runs (0 pending chunks) to roll back" in dry.output
        and "a repair would refuse" in dry.output
    )

    refused = runner.invoke(app, ["reconcile", "--home", home, "-n", "docs"])
    assert refused.exit_code == 1
    assert refused.output.strip().count("\n") == 0 and refused.output.startswith("error: refusing to reconcile")
    assert "Traceback" not in refused.output

    forced = runner.invoke(app, ["reconcile", "--home", home, "-n", "docs", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "repaired 0 missing, 0 differing (sampled), 1 orphaned" in forced.output


def test_cli_dry_run_names_the_crashed_runs_a_repair_rolls_back(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    root, home = corpus(tmp_path), str(tmp_path / "home")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(root), "--home", home, "-n", "docs", "--no-flow"]).exit_code == 0
    write(root, {"extra.md": "# Extra\n\nOnly in the crashed run."})
    c = build_components(RaglineConfig(home=Path(home), namespace="docs", model_cache_dir=models_dir))
    crashed = open_run(c, "docs", "docs")
    write_batches(DirectSteps(c), crashed, DirectorySource(root, name="docs").items(), batch_size=10)
    c.close()

    dry = runner.invoke(app, ["reconcile", "--home", home, "-n", "docs", "--dry-run"])
    assert dry.exit_code == 1, dry.output  # not in sync
    assert f"0 orphaned; 1 crashed runs (1 pending chunks) to roll back ({crashed.run_id})" in dry.output, dry.output
    assert "would refuse" not in dry.output

    repaired = runner.invoke(app, ["reconcile", "--home", home, "-n", "docs"])
    assert repaired.exit_code == 0, repaired.output
    assert "0 orphaned; 1 unfinished runs rolled back" in repaired.output
    in_sync = runner.invoke(app, ["reconcile", "--home", home, "-n", "docs", "--dry-run"])
    assert in_sync.exit_code == 0, in_sync.output
    assert in_sync.output.count("0 crashed runs (0 pending chunks) to roll back: in sync;") == 1
