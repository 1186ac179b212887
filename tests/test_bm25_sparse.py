"""BM25 as sparse vectors: dot products equal bm25s's scores; stable term hashing; collisions; Pinecone's limits."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import bm25s
import numpy as np
import pytest

from ragline.retrieval.bm25 import BM25Params, indexed_text, tokenizer
from ragline.retrieval.bm25_sparse import (
    EMPTY_DOCUMENT,
    document_vector,
    params_from_key,
    params_key,
    query_vector,
    term_counts,
    term_index,
)
from ragline.stores.sparse import MAX_SPARSE_VALUES, SparseValues, sparse_problem
from tests.conftest import CRANFIELD

PARAMS = BM25Params()


def dot(query: SparseValues, document: SparseValues) -> float:
    weights = query.as_dict()
    return sum(weights.get(i, 0.0) * v for i, v in document.as_dict().items())


def test_dot_products_equal_bm25s_scores_on_cranfield() -> None:
    corpus = [json.loads(line) for line in (CRANFIELD / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line)["text"] for line in (CRANFIELD / "queries.jsonl").read_text().splitlines()][:40]
    tokenize = tokenizer(PARAMS)
    tokens = tokenize([indexed_text(d["text"], {"title": d["title"]}) for d in corpus])
    model = bm25s.BM25(k1=PARAMS.k1, b=PARAMS.b)
    model.index(tokens, show_progress=False)

    terms = [term_counts(t) for t in tokens]
    average = sum(len(t) for t in tokens) / len(tokens)
    frequencies = Counter(term for counts in terms for term in counts)
    documents = [document_vector(t, average, PARAMS) for t in terms]
    for query in queries:
        weights = Counter(tokenize([query])[0])
        expected = np.zeros(len(corpus))
        for term, count in weights.items():
            if term in model.vocab_dict:
                expected += count * model.get_scores_from_ids([model.vocab_dict[term]])
        vector = query_vector(weights, frequencies, len(corpus))
        assert vector is not None
        scores = np.array([dot(vector, d) for d in documents])
        np.testing.assert_allclose(scores, expected, rtol=2e-5, atol=1e-5)


def test_term_indices_are_stable_and_never_the_reserved_zero() -> None:
    assert [term_index(t) for t in ("wing", "supersonic", "é")] == [210902435, 3965047256, 2504344771]
    assert all(1 <= term_index(f"t{n}") <= 2**32 - 1 for n in range(10_000))


def colliding_terms() -> tuple[str, str]:
    """Two different terms with one index (a birthday search over 32 bits: about 80,000 hashes)."""
    seen: dict[int, str] = {}
    for n in itertools.count():
        term = f"term{n}"
        if (index := term_index(term)) in seen:
            return seen[index], term
        seen[index] = term
    raise AssertionError("unreachable")


def test_colliding_terms_share_a_dimension_and_their_weights_add_up() -> None:
    first, second = colliding_terms()
    assert first != second and term_index(first) == term_index(second)
    document = document_vector({first: 1, second: 2, "other": 1}, 4.0, PARAMS)
    alone = document_vector({first: 1, "x": 2, "other": 1}, 4.0, PARAMS)
    assert len(document.indices) == 2 and len(set(document.indices)) == 2
    assert document.as_dict()[term_index(first)] > alone.as_dict()[term_index(first)]
    query = query_vector({first: 1.0, second: 1.0}, {first: 3, second: 5}, 10)
    assert query is not None and query.indices == (term_index(first),)
    assert sparse_problem(document) is None and sparse_problem(query) is None


def test_a_chunk_without_terms_gets_the_reserved_dimension_which_no_query_matches() -> None:
    assert document_vector({}, 10.0, PARAMS) == EMPTY_DOCUMENT
    assert query_vector({"unknown": 1.0}, {}, 10) is None
    query = query_vector({"wing": 1.0}, {"wing": 2}, 10)
    assert query is not None and dot(query, EMPTY_DOCUMENT) == 0.0


def test_long_chunks_and_queries_keep_their_heaviest_thousand_dimensions() -> None:
    terms = {f"w{n}": 1 + n % 5 for n in range(1_500)}
    document = document_vector(terms, 1_000.0, PARAMS)
    assert len(document.indices) == MAX_SPARSE_VALUES and sparse_problem(document) is None
    assert {term_index(t) for t, tf in terms.items() if tf >= 3} <= set(document.indices)  # the 900 heaviest
    query = query_vector({t: 1.0 for t in terms}, {t: 1 + n for n, t in enumerate(terms)}, 5_000)
    assert query is not None and len(query.indices) == MAX_SPARSE_VALUES


def test_parameters_round_trip_as_stable_json() -> None:
    key = params_key(BM25Params(k1=1.2, b=0.5, stemmer=None))
    assert key == '{"b": 0.5, "k1": 1.2, "stemmer": null, "stopwords": "en"}'
    assert params_from_key(key) == BM25Params(k1=1.2, b=0.5, stemmer=None)


@pytest.mark.parametrize("avg", [5.0, 20.0])
def test_longer_chunks_weigh_a_term_less_as_bm25_normalises_length(avg: float) -> None:
    short = document_vector({"wing": 1, "a1": 1}, avg, PARAMS).as_dict()[term_index("wing")]
    long = document_vector({"wing": 1, **{f"a{n}": 1 for n in range(30)}}, avg, PARAMS).as_dict()[term_index("wing")]
    assert 0 < long < short < 1
