"""A corpus of hostile inputs, generated into a folder: each one with the quarantine reason ragline must give it.

``write_hostile_tree`` makes a folder of files (binary, zero bytes, a sparse 200 MB file, invalid UTF-8, deeply
nested HTML, a FIFO, symlink loops, a symlink escaping the root, a broken PDF, one giant line, hostile names) and
``write_hostile_jsonl`` a JSON Lines file (malformed lines, non-objects, missing or duplicate ids, missing text,
invalid UTF-8, deep nesting, an over-long line, metadata with nulls, nested objects, hostile keys, over 40 KB).
Expectations are by document id (files) or line number (JSONL); ``None`` means the input must be indexed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ragline.limits import MAX_METADATA_BYTES
from ragline.records import make_doc_id
from ragline.sources.datasets import (
    MAX_LINE_FACTOR,
    REASON_DUPLICATE_ID,
    REASON_MALFORMED_JSON,
    REASON_MISSING_ID,
    REASON_MISSING_TEXT,
    REASON_NOT_AN_OBJECT,
    REASON_NUL,
)
from ragline.sources.datasets import REASON_TOO_LARGE as REASON_RECORD_TOO_LARGE
from ragline.sources.files import (
    MAX_HTML_DEPTH,
    REASON_BINARY,
    REASON_EMPTY,
    REASON_ESCAPES_ROOT,
    REASON_HTML_TOO_DEEP,
    REASON_PDF_UNPARSEABLE,
    REASON_TOO_LARGE,
    REASON_UNDECODABLE,
    REASON_UNREADABLE,
)

REASON_METADATA_TOO_LARGE = "over the index's"
"""A fragment of the ingest's reason for a chunk too large for the index: its metadata, or its id."""
HUGE_FILE_BYTES = 200 * 1024 * 1024
HOSTILE_KEYS = ("it's", 'say "hi"', "a`b", "x; DROP TABLE t; --", "nul\x00key", "ünï 🦆", "$and", "")

_PROSE = (
    "Hostile inputs must never stop a run. The pipeline quarantines what it cannot use, says why, and "
    "indexes everything else. "
)


@dataclass(frozen=True)
class HostileTree:
    """The generated folder, its source name, and the expected reason per document id (None: indexed)."""

    root: Path
    source: str
    expected: dict[str, str | None]


@dataclass(frozen=True)
class HostileJsonl:
    """The generated JSON Lines file, the ``max_record_bytes`` to read it with, and the expected reasons: by
    ``"line N"`` for what the loader rejects, by document id for what reaches the pipeline (None: indexed)."""

    path: Path
    max_record_bytes: int
    expected: dict[str, str | None]


def write_hostile_tree(parent: Path, source: str = "hostile") -> HostileTree:
    """Write the hostile folder under ``parent / source`` (the 200 MB file is sparse: no disk space used)."""
    root = parent / source
    root.mkdir(parents=True)
    outside = parent / "outside-secret.md"
    outside.write_text("# secret\n\nThis file lies outside the source root.\n")
    expected: dict[str, str | None] = {}

    def put(name: str, content: bytes, reason: str | None) -> None:
        (root / name).write_bytes(content)
        expected[make_doc_id(source, name)] = reason

    put("good.md", f"# Good\n\n{_PROSE}".encode(), None)
    put("café ünï.md", f"# Unicode name\n\n{_PROSE}".encode(), None)
    put('quote\'s "name"; DROP.md', f"# Quoted name\n\n{_PROSE}".encode(), None)
    put("controls.txt", f"bidi \u202e override, zero width \u200b, bell \a, escape \x1b[31m. {_PROSE}".encode(), None)
    put("giant-line.txt", ("word " * 4000).encode(), None)
    put("binary.txt", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, REASON_BINARY)
    put("zero.md", b"", REASON_EMPTY)
    put("blank.txt", b" \n\t\r\n  ", REASON_EMPTY)
    put("latin1.txt", "naïve café".encode("latin-1"), REASON_UNDECODABLE)
    put(
        "deep.html",
        b"<html><body>" + b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000 + b"</body></html>",
        REASON_HTML_TOO_DEEP,
    )
    put(
        "nested-ok.html",
        b"<div>" * (MAX_HTML_DEPTH - 10) + b"<p>shallow enough</p>" + b"</div>" * (MAX_HTML_DEPTH - 10),
        None,
    )
    put("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nthis is not a pdf", REASON_PDF_UNPARSEABLE)
    with open(root / "huge.txt", "wb") as huge:
        huge.truncate(HUGE_FILE_BYTES)
    expected[make_doc_id(source, "huge.txt")] = REASON_TOO_LARGE
    os.mkfifo(root / "fifo.md")
    expected[make_doc_id(source, "fifo.md")] = REASON_UNREADABLE
    os.symlink("loop-b.md", root / "loop-a.md")
    os.symlink("loop-a.md", root / "loop-b.md")
    expected[make_doc_id(source, "loop-a.md")] = REASON_UNREADABLE
    expected[make_doc_id(source, "loop-b.md")] = REASON_UNREADABLE
    os.symlink(outside, root / "escape.md")
    expected[make_doc_id(source, "escape.md")] = REASON_ESCAPES_ROOT
    os.symlink("../outside-secret.md", root / "dotdot.md")
    expected[make_doc_id(source, "dotdot.md")] = REASON_ESCAPES_ROOT
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "parent-loop")  # a directory link: never followed, so no loop
    os.symlink(parent, root / "sub" / "outside-dir")
    os.symlink("../good.md", root / "sub" / "inside-link.md")
    expected[make_doc_id(source, "sub/inside-link.md")] = None
    return HostileTree(root, source, expected)


def write_hostile_jsonl(path: Path, max_record_bytes: int = 100_000) -> HostileJsonl:
    """Write the hostile JSON Lines file (blank lines are skipped by the loader and count toward line numbers)."""
    good = {"_id": "good", "title": "Good", "text": _PROSE}
    lines: list[tuple[bytes, str | None]] = [
        (_json(good), None),
        (b'{"_id": "broken", "text": "no closing brace"', REASON_MALFORMED_JSON),
        (b"[1, 2, 3]", REASON_NOT_AN_OBJECT),
        (b'"just a string"', REASON_NOT_AN_OBJECT),
        (_json({"text": "no id here"}), REASON_MISSING_ID),
        (_json({"_id": True, "text": "a boolean id"}), REASON_MISSING_ID),
        (_json({"_id": "no-text"}), REASON_MISSING_TEXT),
        (_json({"_id": "null-text", "text": None}), REASON_MISSING_TEXT),
        (_json({"_id": "object-text", "text": {"a": 1}}), REASON_MISSING_TEXT),
        (_json(good), REASON_DUPLICATE_ID),
        (b'{"_id": "latin1", "text": "caf\xe9"}', REASON_MALFORMED_JSON),
        (b"[" * 100_000 + b"]" * 100_000, REASON_MALFORMED_JSON),
        (b'{"_id": "deep", "text": "x", "m": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", REASON_MALFORMED_JSON),
        (_json({"_id": "too-long", "text": "y" * (MAX_LINE_FACTOR * max_record_bytes)}), REASON_RECORD_TOO_LARGE),
        (_json({"_id": "big-text", "text": "z " * max_record_bytes}), REASON_RECORD_TOO_LARGE),
        (
            _json(
                {
                    "_id": "nulls",
                    "text": _PROSE,
                    "metadata": {
                        "gone": None,
                        "kept": 1,
                        "nan": float("nan"),
                        "nested": {"a": [1, {"b": None}]},
                        "mixed": ["a", 1],
                    },
                }
            ),
            None,
        ),
        (_json({"_id": "keys", "text": _PROSE, "metadata": {k: f"value of {k!r}" for k in HOSTILE_KEYS}}), None),
        (
            _json({"_id": "huge-metadata", "text": _PROSE, "metadata": {"blob": "m" * (MAX_METADATA_BYTES + 10)}}),
            REASON_METADATA_TOO_LARGE,
        ),
        (_json({"_id": "i" * 600, "text": _PROSE}), REASON_METADATA_TOO_LARGE),  # its chunk ids: over 512 characters
        (_json({"_id": "../../etc/passwd", "text": _PROSE}), None),
        (_json({"_id": "x' OR '1'='1", "text": _PROSE}), None),
        (_json({"_id": "nul-text", "text": "before\x00after " + _PROSE}), REASON_NUL),
        (b'{"_id": "lone-surrogate", "text": "before \\ud800 after ' + _PROSE.encode() + b'"}', REASON_MALFORMED_JSON),
        (b'{"_id": "surrogate-pair", "text": "\\ud83d\\ude00 ' + _PROSE.encode() + b'"}', None),
        (_json({"_id": "huge-int", "text": _PROSE, "count": 2**70, "exact": 2**53 + 1}), None),
    ]
    expected: dict[str, str | None] = {}
    with open(path, "wb") as out:
        for i, (line, reason) in enumerate(lines):
            out.write(line + b"\n\n")
            if reason is None or reason == REASON_METADATA_TOO_LARGE:
                expected[make_doc_id(path.stem, json.loads(line)["_id"])] = reason
            else:
                expected[f"line {2 * i + 1}"] = reason
    return HostileJsonl(path, max_record_bytes, expected)


def _json(record: dict[str, object]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")
