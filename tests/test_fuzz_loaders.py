"""Fuzzing the loaders: any bytes in a .jsonl file or a .md/.txt/.html file give documents or quarantine records,
never another exception, and every non-blank line is accounted for (hypothesis, plus an atheris run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragline.records import Document, QuarantineRecord
from ragline.sources import DirectorySource, JsonlSource
from tests.support.fault_report import record_figures
from tests.support.fuzz_targets import fuzz_without_crashes

JSONL_EXAMPLES = 150
FILE_EXAMPLES = 100

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=12,
)
RECORDS = st.fixed_dictionaries(
    {},
    optional={
        "_id": st.one_of(st.text(max_size=10), st.integers(), JSON_VALUES),
        "id": JSON_VALUES,
        "text": st.one_of(st.text(max_size=60), JSON_VALUES),
        "title": JSON_VALUES,
        "metadata": JSON_VALUES,
        "extra": JSON_VALUES,
    },
)
LINES = st.one_of(
    RECORDS.map(lambda r: json.dumps(r).encode()),
    st.binary(max_size=60),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
)


def _items(path: Path, **kwargs: int) -> list[Document | QuarantineRecord]:
    return list(JsonlSource(path, name="fuzz", **kwargs).items())


@settings(max_examples=JSONL_EXAMPLES, deadline=None)
@given(lines=st.lists(LINES, max_size=8))
def test_any_jsonl_gives_one_item_per_line(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines))
        items = _items(path, max_record_bytes=200)
    non_blank = [line for line in lines if line.replace(b"\n", b" ").strip()]
    assert len(items) == len(non_blank)
    for item in items:
        assert isinstance(item, Document | QuarantineRecord)
        if isinstance(item, Document):
            assert item.text.strip() and json.dumps(item.metadata)  # metadata is JSON-clean (no NaN, no nesting)
            assert all(isinstance(v, str | int | float | bool | list) for v in item.metadata.values())
        else:
            assert item.reason and item.detail.startswith("line ")


@pytest.mark.parametrize("depth", [500, 5_000, 500_000])
def test_deeply_nested_metadata_is_quarantined_or_flattened(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"_id": "d", "text": "t", "metadata": {"m": ' + "[" * depth + "]" * depth + "}}\n")
    [item] = _items(path)
    assert isinstance(item, Document) or item.detail == "line 1: nested too deeply"


@settings(max_examples=FILE_EXAMPLES, deadline=None)
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".md", ".txt", ".html"]))
def test_any_file_bytes_give_a_document_or_a_quarantine_record(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / f"f{suffix}").write_bytes(data)
        [item] = DirectorySource(Path(folder), name="fuzz").items()
    assert isinstance(item, Document | QuarantineRecord)
    assert isinstance(item, QuarantineRecord) or item.text.strip()


ATHERIS_RUNS = 5_000


@pytest.mark.slow
def test_atheris_jsonl_fuzz(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    fuzz_without_crashes("jsonl", ATHERIS_RUNS, tmp_path)
    record_figures(
        "fuzz_loaders",
        {"atheris_runs": ATHERIS_RUNS, "hypothesis_examples": JSONL_EXAMPLES + FILE_EXAMPLES, "crashes": 0},
    )


@pytest.mark.slow
def test_fuzzing_from_a_large_test_process_stays_inside_the_memory_limit(tmp_path: Path) -> None:
    """libFuzzer counts peak RSS; a fuzzer started straight from a 2.5 GB process would inherit that peak."""
    script = (
        "import sys; from pathlib import Path\n"
        "big = bytearray(2_600 * 1024 * 1024); big[::4096] = b'x' * len(big[::4096])\n"
        "from tests.support.fuzz_targets import fuzz_without_crashes\n"
        "fuzz_without_crashes('jsonl', 500, Path(sys.argv[1]))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
