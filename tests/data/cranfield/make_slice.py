"""Cut this slice from the shared Cranfield collection: python tests/data/cranfield/make_slice.py SHARED_DIR.

Keeps documents 1-200 (in corpus order), the queries with at least one relevant document among them, and their
judgments restricted to those documents.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOCUMENTS = 200


def main(cranfield: Path, out: Path) -> None:
    lines = (cranfield / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:DOCUMENTS]
    kept = {json.loads(line)["_id"] for line in lines}
    (out / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = [r.split("\t") for r in (cranfield / "qrels" / "test.tsv").read_text().splitlines()]
    header, judged = rows[0], [r for r in rows[1:] if r[1] in kept]
    (out / "qrels").mkdir(exist_ok=True)
    (out / "qrels" / "test.tsv").write_text("\n".join("\t".join(r) for r in [header, *judged]) + "\n")
    queries = {r[0] for r in judged}
    wanted = [q for q in (cranfield / "queries.jsonl").read_text(encoding="utf-8").splitlines()
              if json.loads(q)["_id"] in queries]
    (out / "queries.jsonl").write_text("\n".join(wanted) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) / "datasets" / "cranfield", Path(__file__).resolve().parent)
