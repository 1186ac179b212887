"""Long commands show progress (what is done, how much, the rate, the time elapsed) on a terminal, and print only
their report when piped. Each command runs in its own process; ``TTY_COMPATIBLE=1`` makes Rich treat the captured
streams as a terminal, which is what a user's terminal looks like to it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# "⠋ corpus → docs: 5 documents, 41.2/s 0:00:00": description, count and unit, rate, elapsed
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROGRESS_LINE = r"{what}: [\d,]+( of [\d,]+)? {unit}(, [\d.]+/s)? \d+:\d\d:\d\d"


def ragline(*args: str, terminal: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TTY_COMPATIBLE": "1" if terminal else "0", "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, "-m", "ragline.cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    done.stderr = ESCAPE.sub("", done.stderr)  # colours and cursor moves
    return done


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for n in range(5):
        (root / f"note{n}.txt").write_text(f"Note {n}: the wing section was tested at Mach {n + 1}.\n")
    return root


def test_ingest_and_reconcile_show_progress_on_a_terminal_and_nothing_when_piped(corpus: Path, tmp_path: Path) -> None:
    home = ["--home", str(tmp_path / "home"), "-n", "docs"]
    shown = ragline("ingest", str(corpus), *home, terminal=True)
    assert shown.returncode == 0, shown.stderr
    assert re.search(PROGRESS_LINE.format(what="corpus → docs", unit="documents"), shown.stderr), shown.stderr
    assert "Documents seen" in shown.stdout

    (corpus / "note0.txt").write_text("Note 0, rewritten: the flap was tested at low speed.\n")
    piped = ragline("ingest", str(corpus), *home, terminal=False)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    assert "Documents seen" in piped.stdout and "documents," not in piped.stdout

    shown = ragline("reconcile", *home, terminal=True)
    assert shown.returncode == 0, shown.stderr
    assert re.search(PROGRESS_LINE.format(what="reconcile docs: reading the index's ids", unit="ids"), shown.stderr)
    assert "in sync" in shown.stdout
    piped = ragline("reconcile", "--rebuild", *home, terminal=False)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    assert "rebuilt: 5 chunks written" in piped.stdout


def test_eval_shows_queries_done_of_the_total_on_a_terminal_and_nothing_when_piped(tmp_path: Path) -> None:
    args = ["eval", "--dataset", "tests/data/cranfield", "--mode", "bm25", "--home", str(tmp_path / "home")]
    shown = ragline(*args, terminal=True)
    assert shown.returncode == 0, shown.stderr
    queries = re.search(PROGRESS_LINE.format(what="cranfield, bm25 retrieval", unit="queries"), shown.stderr)
    assert queries and " of " in queries.group(0), shown.stderr
    assert re.search(PROGRESS_LINE.format(what=r"\S+ → beir-cranfield", unit="documents"), shown.stderr), shown.stderr
    assert "nDCG@10" in shown.stdout

    piped = ragline(*args, terminal=False)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    assert "nDCG@10" in piped.stdout
