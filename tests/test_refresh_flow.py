"""The refresh flow under a Prefect test harness: configured sources by default, TTL expiry, artifacts."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from tests.test_ingest import NS, corpus

T0 = 1_800_000_000.0


def test_flow_refreshes_the_configured_sources_and_publishes_artifacts(
    harness: None, monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path
) -> None:
    from prefect.artifacts import Artifact

    from ragline.flows.refresh import refresh_flow

    root = corpus(tmp_path)
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    monkeypatch.setenv("RAGLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAGLINE_REFRESH_SOURCES", json.dumps([{"path": str(root), "ttl": "1h", "namespace": NS}]))
    assert all(p.default is not inspect.Parameter.empty for p in inspect.signature(refresh_flow.fn).parameters.values())

    first = refresh_flow(now=T0)
    assert [(s["source"], s["namespace"], s["ttl"], s["new"]) for s in first["sources"]] == [("docs", NS, "1h", 5)]

    (root / "notes" / "b.txt").unlink()
    second = refresh_flow(now=T0 + 3601)
    (row,) = second["sources"]
    assert (row["expired"], row["removed"], row["embeddings computed"], row["chunks written"]) == (4, 1, 0, 0)
    assert [(r["when"], r["missing"], r["orphans"]) for r in second["reconciled"]] == [
        ("before", 0, 0),
        ("after", 0, 0),
    ]

    summary = Artifact.get("refresh-summary")
    assert summary is not None and "| expired | 4 |" in summary.data and "| removed | 1 |" in summary.data
    stats = Artifact.get("refresh-stats")
    counts = {row["count"]: row["value"] for row in json.loads(stats.data)}
    assert stats is not None and counts["chunks re-verified"] > 4
    repairs = Artifact.get("refresh-reconcile")
    assert repairs is not None and [r["when"] for r in json.loads(repairs.data)] == ["before", "after"]
