"""The ``ragline`` command line, run in-process with typer's runner on a temp state directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.cli import app
from tests.test_ingest import corpus

runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path) -> Path:
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path / "home"


def test_ingest_prints_counts_and_status_reports_the_namespace(cli_env: Path, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    (root / "broken.txt").write_bytes(b"\xff\xfe not utf-8 \x80")
    first = runner.invoke(app, ["ingest", str(root), "--home", str(cli_env), "-n", "docs"])
    assert first.exit_code == 0, first.output
    assert "Documents new" in first.output and "quarantined" in first.output and "broken.txt" in first.output
    again = runner.invoke(app, ["ingest", str(root), "--home", str(cli_env), "-n", "docs"])
    assert again.exit_code == 0
    assert re.search(r"Documents unchanged\s+│\s+5\s", again.output)
    status = runner.invoke(app, ["status", "--home", str(cli_env), "-n", "docs"])
    assert status.exit_code == 0
    assert "5 documents" in status.output and "committed" in status.output


def test_status_lists_every_input_the_last_run_quarantined(cli_env: Path, tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    lines = [f'{{"id": "bad-{n}", "text": "cut' for n in range(23)] + ['{"id": "good", "text": "Gliders soar."}']
    feed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ingested = runner.invoke(app, ["ingest", str(feed), "--home", str(cli_env), "-n", "feed"])
    assert ingested.exit_code == 0 and "… and 3 more (see `ragline status --quarantined`)" in ingested.output
    status = runner.invoke(app, ["status", "--home", str(cli_env), "-n", "feed", "--quarantined"])
    listed = [line for line in status.output.splitlines() if line.startswith("quarantined ")]
    assert status.exit_code == 0 and len(listed) == 23 and all("malformed JSON" in line for line in listed)
    assert "(line 23" in listed[-1]  # where in the file


def test_ingest_of_a_missing_path_fails_with_a_clear_message(cli_env: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path / "nowhere"), "--home", str(cli_env)])
    assert result.exit_code == 2
    assert "error:" in result.output and "nowhere" in result.output


def test_reconcile_reports_and_repairs(cli_env: Path, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    assert runner.invoke(app, ["ingest", str(root), "--home", str(cli_env), "-n", "docs"]).exit_code == 0
    result = runner.invoke(app, ["reconcile", "--home", str(cli_env), "-n", "docs", "--dry-run"])
    assert result.exit_code == 0 and "found 0 missing" in result.output


def test_evaluate_scores_the_sample_set_and_exits_1_on_a_regression(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from ragline.components import make_record_store
    from ragline.config import load_config
    from ragline.evaluation.history import EvaluationHistory, history_rows
    from tests.test_evaluation_metrics import report_with

    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    monkeypatch.setenv("RAGLINE_EVAL_SAMPLE_PATH", str(sample))
    monkeypatch.setenv("RAGLINE_EVAL_ANSWERS", "false")  # answers in `ragline eval`: tests/test_answer_eval.py
    assert runner.invoke(app, ["ingest", str(sample), "--home", str(cli_env), "-n", "live"]).exit_code == 0
    first = runner.invoke(app, ["eval", "--home", str(cli_env), "-n", "live", "-m", "bm25"])
    assert first.exit_code == 0, first.output
    assert "nDCG@10" in first.output and "bm25" in first.output and "baseline" in first.output

    records = make_record_store(load_config(home=cli_env))
    EvaluationHistory(records.evaluations).append(
        history_rows([report_with({"bm25": 1.5})], [], run_id="seeded", timestamp=datetime.now(UTC))
    )
    records.close()
    second = runner.invoke(app, ["eval", "--home", str(cli_env), "-n", "live", "-m", "bm25"])
    assert second.exit_code == 1 and "regression:" in second.output and "sample/bm25" in second.output


def test_query_prints_ranked_chunks_and_rejects_a_bad_filter(cli_env: Path, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    assert runner.invoke(app, ["ingest", str(root), "--home", str(cli_env), "-n", "docs"]).exit_code == 0
    for mode in ("hybrid", "dense", "bm25"):
        result = runner.invoke(
            app, ["query", "namespaces per tenant", "--home", str(cli_env), "-n", "docs", "--mode", mode, "-k", "2"]
        )
        assert result.exit_code == 0, result.output
        assert re.search(r"│ 1 .*docs/notes/b\.txt#0", result.output), result.output  # ranked first
    filtered = runner.invoke(
        app, ["query", "namespaces", "--home", str(cli_env), "-n", "docs", "--filter", '{"format": {"$eq": "md"}}']
    )
    assert filtered.exit_code == 0 and "notes/b.txt" not in filtered.output
    bad = runner.invoke(app, ["query", "x", "--home", str(cli_env), "-n", "docs", "--filter", '{"$nope": 1}'])
    assert bad.exit_code == 2 and "error:" in bad.output
    bad_mode = runner.invoke(app, ["query", "x", "--home", str(cli_env), "-n", "docs", "--mode", "fuzzy"])
    assert bad_mode.exit_code == 2 and "mode" in bad_mode.output
