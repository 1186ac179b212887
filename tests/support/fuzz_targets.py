"""atheris fuzz targets (coverage-guided, libFuzzer): the filter validator/translator and the JSON Lines loader.

Run one as ``python -m tests.support.fuzz_targets filters|jsonl -runs=N [corpus dir]``; it exits non-zero on
the first input that makes a target raise anything but the documented errors. ``seed_corpus`` writes starting
inputs, since random bytes are rarely valid JSON. Only the modules under test are instrumented.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SEEDS: dict[str, list[bytes]] = {
    "filters": [
        json.dumps(f).encode()
        for f in (
            {"genre": "drama"},
            {"year": {"$gt": 2000, "$lte": 2020}, "tags": {"$in": ["a", "b'c"]}},
            {"$or": [{"a": {"$exists": False}}, {"$and": [{"b": {"$ne": True}}, {"c": {"$nin": [1, "x"]}}]}]},
            {"it's": {"$eq": "x') OR TRUE --"}},
        )
    ],
    "jsonl": [
        b'{"_id": "1", "title": "t", "text": "some text", "metadata": {"a": null, "b": {"c": [1]}}}\n',
        b'{"id": 2, "text": "x", "year": 2020, "tags": ["a", "b"]}\n{"_id": "1", "text": ""}\n[1]\n',
    ],
}


def seed_corpus(target: str, folder: Path) -> Path:
    """Write the target's seed inputs into ``folder`` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS[target]):
        (folder / f"seed{i}").write_bytes(seed)
    return folder


def fuzz_without_crashes(target: str, runs: int, workdir: Path, seed: int = 1) -> None:
    """Fuzz ``target`` for ``runs`` inputs in a subprocess (libFuzzer exits its process), from the seed corpus;
    raise AssertionError, with libFuzzer's output, unless every run completed."""
    corpus = seed_corpus(target, workdir / f"corpus-{target}")
    repo = Path(__file__).resolve().parents[2]
    fuzzer = [sys.executable, "-m", "tests.support.fuzz_targets", target, f"-runs={runs}", f"-seed={seed}", str(corpus)]
    # Through a shell that forks it: a process exec'd straight from this one inherits its peak RSS (ru_maxrss
    # survives exec on Linux), and libFuzzer would count the test runner's gigabytes against its 2 GB limit.
    done = subprocess.run(
        ["sh", "-c", '"$@"; exit $?', "fuzz", *fuzzer],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(repo)},
        check=False,
    )
    if done.returncode != 0 or f"Done {runs} runs" not in done.stderr:
        raise AssertionError(f"fuzzing {target} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def fuzz_filters(data: bytes) -> None:
    """Any JSON: a FilterError, or a translation whose literals are all closed and a reference verdict."""
    from ragline.errors import FilterError
    from ragline.stores.filters import matches, to_lance_where, validate_filter

    try:
        candidate = json.loads(data)
    except (ValueError, RecursionError):
        return
    try:
        validate_filter(candidate)
    except FilterError:
        return
    sql = to_lance_where(candidate, ["m_s_61", "m_n_61", "m_l_61", "m_b_61"])
    if sql.count("'") % 2:
        raise AssertionError(f"unbalanced quotes in {sql!r}")
    matches(candidate, {"a": "x"})


def fuzz_jsonl(data: bytes) -> None:
    """Any bytes as a .jsonl file: every item is a Document or a QuarantineRecord; nothing else escapes."""
    from ragline.records import Document, QuarantineRecord
    from ragline.sources.datasets import JsonlSource

    with tempfile.NamedTemporaryFile(suffix=".jsonl") as handle:
        handle.write(data)
        handle.flush()
        for item in JsonlSource(Path(handle.name), name="fuzz", max_record_bytes=4096).items():
            if not isinstance(item, Document | QuarantineRecord):
                raise AssertionError(f"unexpected item {item!r}")


TARGETS = {
    "filters": (fuzz_filters, ["ragline.stores.filters"]),
    "jsonl": (fuzz_jsonl, ["ragline.sources.datasets", "ragline.records"]),
}


def main(argv: list[str]) -> None:
    import atheris

    target, modules = TARGETS[argv[1]]
    with atheris.instrument_imports(include=modules):
        for module in modules:
            __import__(module)
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
