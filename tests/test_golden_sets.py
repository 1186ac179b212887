"""Which namespace a BEIR golden set is evaluated in: one folder name, one namespace, mirroring that folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.cli import app
from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.evaluation.metrics import NDCG
from ragline.evaluation.suite import golden_sets, run_suite
from tests.test_cli_errors import user_error

runner = CliRunner()


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A state home not yet created; no Prefect server configured."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("RAGLINE_EMBEDDER", "hashing")
    return tmp_path / "home"


def beir(root: Path, docs: dict[str, str], query: str, relevant: str) -> Path:
    """A one-query BEIR folder at ``root``."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs.items()))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": query}) + "\n")
    (root / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq\t{relevant}\t1\n")
    return root


BREAD = {"1": "Sourdough rises because wild yeast ferments the flour.", "2": "Glaciers carve valleys in rock."}
BRIDGES = {"7": "A suspension bridge hangs its deck from cables.", "8": "The violin bridge carries vibration."}


def test_two_golden_sets_of_one_folder_name_are_refused_naming_both(home: Path, tmp_path: Path) -> None:
    first = beir(tmp_path / "a" / "good", BREAD, "wild yeast sourdough", "1")
    second = beir(tmp_path / "b" / "good", BRIDGES, "suspension bridge cables", "7")
    result = runner.invoke(app, ["eval", "-d", str(first), "-d", str(second), "-m", "bm25", "--home", str(home)])
    user_error(result, str(first), str(second), "'beir-good'", "rename one")
    assert not home.exists()  # refused before anything was built
    same = RaglineConfig(home=home, eval_sample_path="", eval_beir_datasets=[str(first), str(first / ".." / "good")])
    assert [g.namespace for g in golden_sets(same)] == ["beir-good"]  # one folder named twice: evaluated once


def test_a_folder_name_that_makes_no_namespace_is_a_user_error(home: Path, tmp_path: Path) -> None:
    folder = beir(tmp_path / "My Set!", BREAD, "wild yeast sourdough", "1")
    result = runner.invoke(app, ["eval", "-d", str(folder), "-m", "bm25", "--home", str(home)])
    user_error(result, "'beir-My Set!'", "rename the folder")


def test_qrels_that_name_no_corpus_id_say_so(home: Path, tmp_path: Path) -> None:
    folder = beir(tmp_path / "off", BREAD, "wild yeast sourdough", "99")
    result = runner.invoke(app, ["eval", "-d", str(folder), "-m", "bm25", "--home", str(home)])
    user_error(result, "'beir-off'", "its qrels name corpus ids its corpus.jsonl does not hold")


def test_a_golden_set_namespace_holds_only_its_folders_documents(tmp_path: Path) -> None:
    first = beir(tmp_path / "a" / "good", BREAD, "wild yeast sourdough", "1")
    second = beir(tmp_path / "b" / "good", BRIDGES, "suspension bridge cables", "7")
    base = RaglineConfig(home=tmp_path / "state", embedder="hashing", eval_modes=["bm25"], eval_sample_path="")
    for folder in (first, second):
        config = base.model_copy(update={"eval_beir_datasets": [str(folder)]})
        c = build_components(config, embedder=HashingEmbedder())
        try:
            run = run_suite(c, golden_sets(config), run_id=folder.parent.name)
            documents = c.records.journal.live_document_count("beir-good")
        finally:
            c.close()
    assert documents == len(BRIDGES)  # the first folder's documents were deleted, not mixed in
    assert run.reports[0].metrics.loc["bm25", NDCG] == pytest.approx(1.0)


def test_golden_sets_refuse_before_a_flow_run_starts(home: Path, tmp_path: Path) -> None:
    folder = beir(tmp_path / "bad name", BREAD, "wild yeast sourdough", "1")
    result = runner.invoke(app, ["eval", "-d", str(folder), "--flow", "--home", str(home)])
    user_error(result, "'beir-bad name'")
    assert not home.exists()
