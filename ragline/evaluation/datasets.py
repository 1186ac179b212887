"""Golden sets for evaluation: queries with graded relevance judgments, keyed by ragline doc_ids.

Two layouts are read, both with ``queries.jsonl`` (``_id``, ``text``) and tab-separated qrels
(``query-id``, ``corpus-id``, ``score``; a header line is optional):

- BEIR (the folder holds ``corpus.jsonl``; qrels in ``qrels/<split>.tsv`` or ``qrels.tsv``): corpus ids become
  doc_ids the way ingest made them, ``make_doc_id(<folder name>, _id)`` → ``cranfield/184``.
- a document folder with its golden set beside it (``data/sample``): its ``qrels.tsv`` already holds doc_ids
  (``sample/guides/chunking-strategies.md``; non-ASCII characters are percent-encoded as ingest does).

Only queries with at least one relevant (score > 0) judgment are kept, as BEIR and trec_eval do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ragline.errors import SourceError
from ragline.records import make_doc_id
from ragline.sources.datasets import BEIR_CORPUS_FILE, default_dataset_name

QUERIES_FILE = "queries.jsonl"
QRELS_FILE = "qrels.tsv"
QRELS_DIR = "qrels"

Qrels = dict[str, dict[str, int]]
"""query id → doc_id → graded relevance (0 = judged not relevant)."""


@dataclass(frozen=True)
class EvalDataset:
    """A golden set: query texts and their judgments, both keyed by query id."""

    name: str
    queries: dict[str, str]
    qrels: Qrels

    def judged_doc_ids(self) -> set[str]:
        """Every doc_id some query judges relevant."""
        return {doc_id for judged in self.qrels.values() for doc_id, grade in judged.items() if grade > 0}


def load_dataset(path: Path, *, split: str = "test", name: str | None = None) -> EvalDataset:
    """The golden set in folder ``path`` (BEIR or a document folder, see the module docstring).

    ``name`` is the source name the corpus was ingested under (default: the folder name); it prefixes BEIR doc_ids.
    """
    path = Path(path)
    if not (path / QUERIES_FILE).is_file():
        raise SourceError(f"no {QUERIES_FILE} in {path}: not an evaluation dataset")
    name = name or default_dataset_name(path / BEIR_CORPUS_FILE)
    is_beir = (path / BEIR_CORPUS_FILE).is_file()
    raw = read_qrels(_qrels_file(path, split))
    qrels = {
        query_id: {_doc_id(name, corpus, is_beir): grade for corpus, grade in judged.items()}
        for query_id, judged in raw.items()
        if any(grade > 0 for grade in judged.values())
    }
    if not qrels:
        raise SourceError(f"{path}: no query has a relevant (score > 0) judgment")
    texts = read_queries(path / QUERIES_FILE)
    missing = sorted(set(qrels) - set(texts))
    if missing:
        raise SourceError(f"{path}: {len(missing)} judged queries have no text, e.g. {missing[:3]}")
    return EvalDataset(name=name, queries={q: texts[q] for q in qrels}, qrels=qrels)


def read_queries(path: Path) -> dict[str, str]:
    """Query id → text from a JSON Lines file of ``{"_id", "text"}`` objects; an id given twice is an error (which
    text its judgments meant is unknown)."""
    queries: dict[str, str] = {}
    lines = _lines(path)
    if not lines:
        raise SourceError(f"{path} holds no queries")
    first_line: dict[str, int] = {}
    for number, line in lines:
        try:
            record = json.loads(line)
            query_id, text = str(record["_id"]), str(record["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SourceError(f"{path} line {number}: expected a JSON object with '_id' and 'text'") from exc
        if not text.strip():
            raise SourceError(f"{path} line {number}: query {query_id!r} has no text (a query cannot be empty)")
        if query_id in first_line:
            raise SourceError(
                f"{path} line {number}: query id {query_id!r} again (first on line {first_line[query_id]})"
            )
        first_line[query_id] = number
        queries[query_id] = text
    return queries


def read_qrels(path: Path) -> Qrels:
    """Judgments from a ``query-id<TAB>corpus-id<TAB>score`` file. The first line is a header when its score is no
    number; a pair judged twice with different grades is an error."""
    qrels: Qrels = {}
    for number, line in _lines(path):
        fields = line.split("\t")
        if len(fields) != 3:
            raise SourceError(f"{path} line {number}: expected 3 tab-separated fields, got {len(fields)}")
        query_id, corpus_id, score = (f.strip() for f in fields)
        try:
            grade = int(score)
        except ValueError as exc:
            if number == 1 and not _is_number(score):
                continue  # header
            raise SourceError(f"{path} line {number}: score {score!r} is not an integer") from exc
        judged = qrels.setdefault(query_id, {})
        if judged.setdefault(corpus_id, grade) != grade:
            raise SourceError(
                f"{path} line {number}: query {query_id!r} judges {corpus_id!r} {grade}, "
                f"an earlier line {judged[corpus_id]}"
            )
    return qrels


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _doc_id(name: str, corpus_id: str, is_beir: bool) -> str:
    """The doc_id ingest gave a judged document: BEIR ids get the source name; doc_ids are re-encoded as ingest does."""
    if is_beir:
        return make_doc_id(name, corpus_id)
    source, _, rest = corpus_id.partition("/")
    return make_doc_id(source, rest) if rest else corpus_id


def _qrels_file(path: Path, split: str) -> Path:
    for candidate in (path / QRELS_DIR / f"{split}.tsv", path / QRELS_FILE):
        if candidate.is_file():
            return candidate
    raise SourceError(f"no qrels in {path}: expected {QRELS_DIR}/{split}.tsv or {QRELS_FILE}")


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based line numbers."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    return [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
