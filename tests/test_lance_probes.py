"""The probe calibration's choice and its file (the LanceDB side: tests/test_lancedb_store.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ragline.stores import lance_probes
from ragline.stores.lance_probes import Neighbour, Probes

IDS = [f"s{i}" for i in range(4)]
TRUTH = [[(own, 1.0), *((f"{own}-n{j}", 0.9 - j / 100) for j in range(10))] for own in IDS]  # nearest first
Search = Callable[[int, int | None], list[Neighbour]]


def _search_finding_all_from(enough: int | None) -> Search:
    """A search that finds the whole truth from ``enough`` probes on (None: only with every partition)."""

    def search(i: int, nprobes: int | None) -> list[Neighbour]:
        complete = nprobes is None or (enough is not None and nprobes >= enough)
        return TRUTH[i][: 11 if complete else 5]

    return search


def test_calibration_keeps_one_step_above_the_fewest_probes_that_reach_the_target() -> None:
    probes = lance_probes.calibrate("u", "K", 1_000, 1_000, IDS, TRUTH, _search_finding_all_from(32))
    assert probes == Probes("u", 64, 1.0, 1_000, "K")
    probes = lance_probes.calibrate("u", "K", 1_000, 1_000, IDS, TRUTH, _search_finding_all_from(256))
    assert probes == Probes("u", None, 1.0, 1_000, "K")  # no step above the last one


def test_calibration_falls_back_to_every_partition() -> None:
    probes = lance_probes.calibrate("u", "K", 1_000, 1_000, IDS, TRUTH, _search_finding_all_from(None))
    assert probes == Probes("u", None, 1.0, 1_000, "K")


def test_calibration_tries_at_most_half_the_partitions() -> None:
    tried: list[int | None] = []

    def search(i: int, nprobes: int | None) -> list[Neighbour]:
        tried.append(nprobes)
        return []

    probes = lance_probes.calibrate("u", "K", 1_000, 40, IDS, TRUTH, search)
    assert sorted(set(tried), key=lambda n: n or 10**9) == [8, None] and probes.recall == 0.0  # 16 is the margin


def test_the_sample_vector_itself_does_not_count() -> None:
    def search(i: int, nprobes: int | None) -> list[Neighbour]:
        return TRUTH[i][:10]  # itself and 9 of its 10 neighbours

    assert lance_probes.calibrate("u", "K", 1_000, 1_000, IDS, TRUTH, search).recall == 0.9


def test_a_duplicate_ranked_above_the_sample_vector_still_leaves_ten_to_find() -> None:
    truth = [[(f"{own}-copy", 1.0), (own, 1.0), *((f"{own}-n{j}", 0.9 - j / 100) for j in range(9))] for own in IDS]
    probes = lance_probes.calibrate("u", "K", 1_000, 1_000, IDS, truth, lambda i, nprobes: truth[i])
    assert probes.nprobes == 16 and probes.recall == 1.0


def test_a_tied_copy_of_a_neighbour_counts_as_found() -> None:
    """Boilerplate: the five nearest neighbours are copies of one text, sharing a vector with many more copies, so
    any five of them are the exact answer; the index finds other copies."""
    others = [(f"n{j}", 0.7 - j / 100) for j in range(5)]
    truth = [[(own, 1.0), *((f"{own}-copy{j}", 0.8) for j in range(5)), *others] for own in IDS]

    def search(i: int, nprobes: int | None) -> list[Neighbour]:
        copies = [(f"{IDS[i]}-copy{j}", 0.8 - 1e-6) for j in range(20, 25)]  # other copies, float32 rounding apart
        return [*copies, *others[:4], ("far", 0.5)] if nprobes == 8 else [*copies, *others]

    probes = lance_probes.calibrate("u", "K", 1_000, 1_000, IDS, truth, search)
    assert probes.nprobes == 32 and probes.recall == 1.0  # 8 probes found 9 of 10: not enough; 16 passed


def test_a_sample_whose_neighbours_are_all_its_copies_says_nothing() -> None:
    """59 of 60 samples are among many copies of one vector (any probe count finds ten copies); the other finds its
    neighbours only with every partition: the copies must not carry the calibration to few probes."""
    ids = [f"s{i}" for i in range(60)]
    truth = [[(own, 1.0), *((f"copy{j}", 1.0) for j in range(10))] for own in ids[:59]]
    truth.append([(ids[59], 1.0), *((f"n{j}", 0.9 - j / 100) for j in range(10))])

    def search(i: int, nprobes: int | None) -> list[Neighbour]:
        return truth[i] if i < 59 or nprobes is None else []

    assert lance_probes.calibrate("u", "K", 1_000, 1_000, ids, truth, search).nprobes is None


def test_a_result_below_the_tenth_score_is_not_found() -> None:
    def search(i: int, nprobes: int | None) -> list[Neighbour]:
        return [(f"{IDS[i]}-other{j}", 0.8) for j in range(10)]  # under the tenth neighbour's 0.81

    assert lance_probes.calibrate("u", "K", 1_000, 1_000, IDS, TRUTH, search).nprobes is None


def test_exact_neighbours_streams_batches() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((500, 8)).astype(np.float32)
    ids = [f"r{i}" for i in range(500)]
    queries = vectors[:3]
    batches = [(ids[s : s + 64], vectors[s : s + 64]) for s in range(0, 500, 64)]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = [[ids[j] for j in np.argsort(-(unit @ q))[:5]] for q in queries]
    found = lance_probes.exact_neighbours(queries, batches, 5)
    assert [[id for id, _ in row] for row in found] == expected
    scores = [score for row in found for _, score in row]
    assert scores == pytest.approx(
        [
            float(unit[j] @ (q / np.linalg.norm(q)))
            for q, row in zip(queries, found)
            for j in (ids.index(id) for id, _ in row)
        ],
        abs=1e-6,
    )


def test_a_kept_calibration_is_read_only_for_its_own_index(tmp_path: Path) -> None:
    path = tmp_path / "ns_n.probes.json"
    lance_probes.save(path, Probes("u1", 16, 0.99, 10, "IvfRq"))
    assert lance_probes.load(path, "u1") == Probes("u1", 16, 0.99, 10, "IvfRq")
    assert lance_probes.load(path, "u1", ("IvfRq", "IvfSq")) == Probes("u1", 16, 0.99, 10, "IvfRq")
    assert lance_probes.load(path, "u2") is None and lance_probes.load(path, None) is None
    assert lance_probes.load(path, "u1", ("IvfSq",)) is None  # made for another kind of index
    path.write_text("[1, 2")
    assert lance_probes.load(path, "u1") is None
    assert lance_probes.load(tmp_path / "missing.json", "u1") is None


def test_an_earlier_releases_calibration_serves_its_index_but_names_no_kind(tmp_path: Path) -> None:
    path = tmp_path / "ns_n.probes.json"
    path.write_text(json.dumps({"index_uuid": "u1", "nprobes": 16, "recall": 0.99, "rows": 10}))
    assert lance_probes.load(path, "u1") == Probes("u1", 16, 0.99, 10, "")
    assert lance_probes.load(path, "u1", ("IvfRq", "IvfSq")) is None
