"""Tests for ragline.sources: folder and dataset sources, quarantine rules, the factory and the sample corpus."""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragline.errors import SourceError
from ragline.records import Document, QuarantineRecord
from ragline.sources import (
    DirectorySource,
    JsonlSource,
    ParquetSource,
    Source,
    SourceItem,
    datasets,
    files,
    open_source,
)
from ragline.sources.datasets import metadata_value
from tests.conftest import CRANFIELD

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


# --- helpers ---------------------------------------------------------------------------------------------------


def write(path: Path, content: str | bytes) -> Path:
    """Write text (UTF-8) or bytes, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def documents(items: Iterable[SourceItem]) -> dict[str, Document]:
    return {item.doc_id: item for item in items if isinstance(item, Document)}


def quarantined(items: Iterable[SourceItem]) -> list[QuarantineRecord]:
    return [item for item in items if isinstance(item, QuarantineRecord)]


def only_document(source: Source) -> Document:
    items = list(source.items())
    assert len(items) == 1 and isinstance(items[0], Document), items
    return items[0]


def only_quarantine(source: Source) -> QuarantineRecord:
    items = list(source.items())
    assert len(items) == 1 and isinstance(items[0], QuarantineRecord), items
    return items[0]


def is_readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except PermissionError:
        return False
    return True


def make_pdf(page_texts: list[str], title: str | None = None) -> bytes:
    """A minimal valid PDF (Helvetica text, one content stream per page, correct xref offsets)."""
    page_ids = [4 + 2 * index for index in range(len(page_texts))]
    kids = " ".join(f"{page_id} 0 R" for page_id in page_ids)
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{kids}] /Count {len(page_ids)} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    for page_id, text in zip(page_ids, page_texts):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>"
        ).encode()
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content)
    trailer = f"/Size {len(objects) + 1} /Root 1 0 R"
    if title is not None:
        objects[len(objects) + 1] = f"<< /Title ({title}) >>".encode()
        trailer = f"/Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R"
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offsets[number] for number in sorted(objects))
    out += f"trailer\n<< {trailer} >>\nstartxref\n{xref_at}\n%%EOF\n".encode()
    return bytes(out)


def write_jsonl(path: Path, lines: list[object | str]) -> Path:
    """Objects are dumped as JSON; strings are written as raw lines (for malformed input)."""
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    return write(path, text)


# --- DirectorySource: formats, titles, metadata ----------------------------------------------------------------


def test_loads_every_supported_format(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "a.md", "# Alpha\n\nMarkdown body.")
    write(root / "b.markdown", "# Beta\n\nAlso Markdown.")
    write(root / "c.txt", "Plain text.")
    write(root / "d.html", "<html><head><title>Delta</title></head><body><p>HTML body.</p></body></html>")
    write(root / "e.htm", "<h1>Epsilon</h1><p>Short HTML.</p>")
    write(root / "f.pdf", make_pdf(["PDF body"]))

    docs = documents(DirectorySource(root).items())

    assert {doc_id: (doc.kind, doc.metadata["format"]) for doc_id, doc in docs.items()} == {
        "docs/a.md": ("markdown", "md"),
        "docs/b.markdown": ("markdown", "md"),
        "docs/c.txt": ("text", "txt"),
        "docs/d.html": ("markdown", "html"),
        "docs/e.htm": ("markdown", "html"),
        "docs/f.pdf": ("text", "pdf"),
    }
    assert docs["docs/f.pdf"].text == "PDF body"


def test_document_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "kb" / "guides" / "intro.md", "# Intro\n\nHello.\n")
    os.utime(path, (1_700_000_000, 1_700_000_000))

    doc = only_document(DirectorySource(tmp_path / "kb"))

    assert doc.doc_id == "kb/guides/intro.md"
    assert doc.source == "kb"
    assert doc.uri == path.resolve().as_uri()
    assert doc.uri.startswith("file:///")
    assert doc.title == "Intro"
    assert doc.text == "# Intro\n\nHello."
    assert doc.modified_at == 1_700_000_000
    assert doc.metadata == {"source": "kb", "path": "guides/intro.md", "format": "md"}
    assert doc.content_hash == Document.hash_content(doc.title, doc.text, doc.metadata)


def test_explicit_name_prefixes_ids(tmp_path: Path) -> None:
    write(tmp_path / "whatever" / "x.txt", "text")
    doc = only_document(DirectorySource(tmp_path / "whatever", name="handbook"))
    assert (doc.doc_id, doc.source, doc.metadata["source"]) == ("handbook/x.txt", "handbook", "handbook")


@pytest.mark.parametrize(
    ("content", "title"),
    [
        ("Intro line\n\n## Section\n\n# The Title\n\nBody", "The Title"),
        ("```bash\n# not a heading\n```\n\n# Real Title #\n", "Real Title"),
        ("#NoSpaceIsNotAHeading\n\nBody", "notes"),
        ('---\ntitle: "From Front Matter"\ntags: [a]\n---\n# Heading\n\nBody', "From Front Matter"),
        ("---\nauthor: someone\n---\n# Heading After Front Matter\n\nBody", "Heading After Front Matter"),
        ("---\ntitle: ''\n---\n# Heading Wins Over Empty Title\n\nBody", "Heading Wins Over Empty Title"),
        ("Only body text.", "notes"),
    ],
)
def test_markdown_title(tmp_path: Path, content: str, title: str) -> None:
    write(tmp_path / "src" / "notes.md", content)
    assert only_document(DirectorySource(tmp_path / "src")).title == title


def test_markdown_front_matter_is_not_part_of_the_text(tmp_path: Path) -> None:
    write(tmp_path / "src" / "page.md", "---\ntitle: T\ndate: 2024-01-01\n---\n\n# Heading\n\nBody")
    assert only_document(DirectorySource(tmp_path / "src")).text == "# Heading\n\nBody"


@pytest.mark.parametrize(
    ("html", "title"),
    [
        ("<html><head><title> Page   Title </title></head><body><h1>Heading</h1></body></html>", "Page Title"),
        ("<html><head><title>  </title></head><body><h2>Two</h2><h1>First <em>H1</em></h1></body></html>", "First H1"),
        ("<p>No title or h1 here.</p>", "page"),
    ],
)
def test_html_title(tmp_path: Path, html: str, title: str) -> None:
    write(tmp_path / "src" / "page.html", html)
    assert only_document(DirectorySource(tmp_path / "src")).title == title


def test_html_becomes_markdown_like_text(tmp_path: Path) -> None:
    html = """<!doctype html>
    <html><head><title>T</title><style>p { color: red }</style></head>
    <body>
      <nav><a href="/">Home</a> | <a href="/docs">Docs</a></nav>
      <script>var tracking = 1;</script>
      <h1>Main <b>Title</b></h1>
      <p>First   paragraph with &amp; entity.</p><!-- a comment -->
      <h2>Section</h2>
      <ul><li>one</li><li>two</li></ul>
      <h3>Sub</h3><p>Line<br>break, and a source
        line wrap that is only a space</p>
      <pre>keep
  this</pre>
      <h6>Deep</h6><table><tr><td>a</td><td>b</td></tr></table>
    </body></html>"""
    write(tmp_path / "src" / "page.html", html)

    text = only_document(DirectorySource(tmp_path / "src")).text

    assert text == (
        "# Main Title\n\nFirst paragraph with & entity.\n\n## Section\n\n- one\n- two\n\n"
        "### Sub\n\nLine\nbreak, and a source line wrap that is only a space\n\nkeep\nthis\n\n###### Deep\n\na b"
    )


def test_text_file_title_is_stem_and_line_ends_are_normalised(tmp_path: Path) -> None:
    write(tmp_path / "src" / "release-notes.txt", b"\xef\xbb\xbfFirst line\r\nSecond line\r\n")
    doc = only_document(DirectorySource(tmp_path / "src"))
    assert (doc.title, doc.text) == ("release-notes", "First line\nSecond line")


def test_pdf_pages_and_metadata_title(tmp_path: Path) -> None:
    write(tmp_path / "src" / "report.pdf", make_pdf(["Page one text", "", "Page three text"], title="Quarterly Report"))
    doc = only_document(DirectorySource(tmp_path / "src"))
    assert doc.title == "Quarterly Report"
    assert doc.text == "Page one text\n\nPage three text"


def test_pdf_without_metadata_title_uses_stem(tmp_path: Path) -> None:
    write(tmp_path / "src" / "scan.pdf", make_pdf(["Hello"]))
    assert only_document(DirectorySource(tmp_path / "src")).title == "scan"


# --- DirectorySource: walking ----------------------------------------------------------------------------------


def test_order_is_depth_first_by_name_and_stable(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for relative in ["b.md", "a/z.txt", "a/b/c.md", "A.txt", "c/d.html", "a.md"]:
        write(root / relative, f"content of {relative}")

    first = [item.doc_id for item in DirectorySource(root).items()]
    second = list(DirectorySource(root).items())

    assert first == ["src/A.txt", "src/a/b/c.md", "src/a/z.txt", "src/a.md", "src/b.md", "src/c/d.html"]
    assert [item.doc_id for item in second] == first
    assert [item.content_hash for item in second] == [item.content_hash for item in DirectorySource(root).items()]


def test_hidden_and_unsupported_files_are_skipped_silently(tmp_path: Path) -> None:
    root = tmp_path / "src"
    write(root / "keep.md", "kept")
    write(root / ".hidden.md", "hidden file")
    write(root / ".git" / "HEAD.txt", "hidden folder")
    write(root / "sub" / ".cache" / "x.md", "nested hidden folder")
    write(root / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    write(root / "queries.jsonl", '{"_id": "q1", "text": "a query"}\n')
    write(root / "qrels.tsv", "query-id\tcorpus-id\tscore\n")
    write(root / "README", "no extension")

    assert [item.doc_id for item in DirectorySource(root).items()] == ["src/keep.md"]


def test_items_stream_lazily(tmp_path: Path) -> None:
    root = tmp_path / "src"
    write(root / "a.md", "first")
    (root / "z").mkdir()
    items = DirectorySource(root).items()
    assert inspect.isgenerator(items)

    first = next(items)
    write(root / "z" / "late.md", "written after the first item was read")

    assert first.doc_id == "src/a.md"
    assert [item.doc_id for item in items] == ["src/z/late.md"]


def test_missing_root_raises_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a directory"):
        list(DirectorySource(tmp_path / "nope").items())


def test_source_protocol() -> None:
    assert isinstance(DirectorySource(Path(".")), Source)
    assert isinstance(JsonlSource(Path("x.jsonl")), Source)
    assert isinstance(ParquetSource(Path("x.parquet")), Source)


# --- DirectorySource: quarantine -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "content", "reason"),
    [
        ("binary.txt", b"text\x00with NUL", files.REASON_BINARY),
        ("latin1.md", "caf\xe9".encode("latin-1"), files.REASON_UNDECODABLE),
        ("blank.txt", " \n\t\n", files.REASON_EMPTY),
        ("zero.md", b"", files.REASON_EMPTY),
        ("front-matter-only.md", "---\ntitle: Nothing\n---\n", files.REASON_EMPTY),
        ("scripts-only.html", "<html><body><script>x()</script><nav>menu</nav></body></html>", files.REASON_EMPTY),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", files.REASON_PDF_UNPARSEABLE),
        ("image-only.pdf", make_pdf([""]), files.REASON_PDF_NO_TEXT),
    ],
)
def test_bad_file_is_quarantined(tmp_path: Path, file_name: str, content: bytes | str, reason: str) -> None:
    path = write(tmp_path / "src" / file_name, content)
    record = only_quarantine(DirectorySource(tmp_path / "src"))
    assert (record.reason, record.doc_id, record.source) == (reason, f"src/{file_name}", "src")
    assert record.uri == path.resolve().as_uri()


def test_walk_goes_on_after_quarantine(tmp_path: Path) -> None:
    root = tmp_path / "src"
    write(root / "a.md", "good")
    write(root / "b.txt", b"\x00\x01")
    write(root / "c.md", "good too")
    kinds = [(item.doc_id, type(item).__name__) for item in DirectorySource(root).items()]
    assert kinds == [("src/a.md", "Document"), ("src/b.txt", "QuarantineRecord"), ("src/c.md", "Document")]


def test_oversized_file_is_quarantined_without_being_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "src" / "big.md", "x" * 101)
    write(tmp_path / "src" / "small.md", "x" * 100)
    read_paths: list[str] = []
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read_paths.append(self.name) or real_read_bytes(self))

    items = list(DirectorySource(tmp_path / "src", max_file_bytes=100).items())

    assert [(item.doc_id, type(item).__name__) for item in items] == [
        ("src/big.md", "QuarantineRecord"),
        ("src/small.md", "Document"),
    ]
    assert items[0].reason == files.REASON_TOO_LARGE and "101 bytes" in items[0].detail
    assert read_paths == ["small.md"]


def test_read_error_is_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "src" / "locked.md", "secret")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    record = only_quarantine(DirectorySource(tmp_path / "src"))
    assert record.reason == files.REASON_UNREADABLE and "Permission denied" in record.detail


def test_unreadable_file_and_folder_are_quarantined(tmp_path: Path) -> None:
    root = tmp_path / "src"
    locked_file = write(root / "a.md", "secret")
    locked_dir = write(root / "b" / "c.md", "secret").parent
    write(root / "d.md", "readable")
    locked_file.chmod(0)
    locked_dir.chmod(0)
    try:
        if is_readable(locked_file):
            pytest.skip("chmod 000 does not stop this user (root with CAP_DAC_OVERRIDE)")
        items = list(DirectorySource(root).items())
    finally:
        locked_file.chmod(0o644)
        locked_dir.chmod(0o755)
    assert [(item.doc_id, type(item).__name__) for item in items] == [
        ("src/a.md", "QuarantineRecord"),
        (None, "QuarantineRecord"),
        ("src/d.md", "Document"),
    ]
    assert {item.reason for item in quarantined(items)} == {files.REASON_UNREADABLE}


def test_file_symlink_inside_root_is_read(tmp_path: Path) -> None:
    root = tmp_path / "src"
    write(root / "real.md", "# Real\n\nbody")
    (root / "alias.md").symlink_to("real.md")
    docs = documents(DirectorySource(root).items())
    assert sorted(docs) == ["src/alias.md", "src/real.md"]
    assert docs["src/alias.md"].text == docs["src/real.md"].text


def test_file_symlink_escaping_root_is_quarantined(tmp_path: Path) -> None:
    outside = write(tmp_path / "outside" / "secret.md", "do not index")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "leak.md").symlink_to(outside)
    record = only_quarantine(DirectorySource(tmp_path / "src"))
    assert (record.reason, record.doc_id) == (files.REASON_ESCAPES_ROOT, "src/leak.md")


def test_directory_symlinks_are_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "src"
    write(root / "sub" / "doc.md", "inside")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    assert [item.doc_id for item in DirectorySource(root).items()] == ["src/sub/doc.md"]


def test_broken_and_looping_file_symlinks_are_quarantined(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / "a.md").symlink_to("b.md")
    (root / "b.md").symlink_to("a.md")
    (root / "dangling.txt").symlink_to("missing.txt")
    records = quarantined(DirectorySource(root).items())
    assert [(record.doc_id, record.reason) for record in records] == [
        ("src/a.md", files.REASON_UNREADABLE),
        ("src/b.md", files.REASON_UNREADABLE),
        ("src/dangling.txt", files.REASON_UNREADABLE),
    ]
    assert all("broken symlink" in record.detail for record in records)


def test_symlinked_root_keeps_its_own_name(tmp_path: Path) -> None:
    write(tmp_path / "real-folder" / "x.md", "body")
    (tmp_path / "docs").symlink_to(tmp_path / "real-folder", target_is_directory=True)
    assert only_document(DirectorySource(tmp_path / "docs")).doc_id == "docs/x.md"


# --- JsonlSource -----------------------------------------------------------------------------------------------


def test_jsonl_records_become_documents(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "faq.jsonl",
        [
            {"_id": "a1", "title": "First", "text": "Alpha text", "metadata": {"lang": "en"}, "year": 2024},
            {"id": 7, "text": "Integer id, no title"},
        ],
    )
    docs = documents(JsonlSource(path).items())

    assert list(docs) == ["faq/a1", "faq/7"]
    first = docs["faq/a1"]
    assert (first.source, first.title, first.text, first.kind) == ("faq", "First", "Alpha text", "text")
    assert first.uri == f"{path.resolve().as_uri()}#a1"
    assert first.metadata == {"year": 2024, "lang": "en", "source": "faq", "format": "jsonl"}
    assert first.content_hash == Document.hash_content("First", "Alpha text", first.metadata)
    assert docs["faq/7"].title == ""


def test_jsonl_id_prefers_underscore_id_and_is_quoted_in_uri(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"_id": "a b/c", "id": "other", "text": "t"}])
    doc = only_document(JsonlSource(path))
    assert doc.doc_id == "d/a b/c"
    assert doc.uri.endswith("#a%20b%2Fc")


def test_jsonl_metadata_is_pinecone_compatible(tmp_path: Path) -> None:
    record = {
        "_id": "1",
        "text": "t",
        "missing": None,
        "tags": ["a", "b"],
        "mixed": ["a", 1],
        "nested": {"b": 1, "a": [True]},
        "score": 0.5,
        "flag": False,
        "metadata": {"author": "x", "source": "overridden"},
    }
    doc = only_document(JsonlSource(write_jsonl(tmp_path / "d.jsonl", [record])))
    assert doc.metadata == {
        "tags": ["a", "b"],
        "mixed": '["a", 1]',
        "nested": '{"a": [true], "b": 1}',
        "score": 0.5,
        "flag": False,
        "author": "x",
        "source": "d",
        "format": "jsonl",
    }


def test_jsonl_bad_lines_are_quarantined_and_reading_goes_on(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"_id": "1", "text": "ok"},
            '{"_id": "2", "text": ',
            "[1, 2]",
            {"text": "no id"},
            {"_id": "", "text": "empty id"},
            {"_id": "6"},
            {"_id": "7", "text": "   "},
            {"_id": "8", "text": 42},
            {"_id": "1", "text": "duplicate of line 1"},
            "",
            {"_id": "11", "text": "still read"},
        ],
    )
    items = list(JsonlSource(path).items())

    assert [(item.doc_id, getattr(item, "reason", "ok")) for item in items] == [
        ("d/1", "ok"),
        (None, datasets.REASON_MALFORMED_JSON),
        (None, datasets.REASON_NOT_AN_OBJECT),
        (None, datasets.REASON_MISSING_ID),
        (None, datasets.REASON_MISSING_ID),
        ("d/6", datasets.REASON_MISSING_TEXT),
        ("d/7", datasets.REASON_MISSING_TEXT),
        ("d/8", datasets.REASON_MISSING_TEXT),
        ("d/1", datasets.REASON_DUPLICATE_ID),
        ("d/11", "ok"),
    ]
    assert items[0].text == "ok"
    malformed, duplicate = items[1], items[8]
    assert malformed.detail.startswith("line 2: ") and malformed.uri.endswith("d.jsonl#line=2")
    assert duplicate.detail == "line 9: id '1' already used at line 1"


def test_jsonl_first_usable_record_wins_an_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"_id": "1", "text": ""}, {"_id": "1", "text": "usable"}])
    items = list(JsonlSource(path).items())
    assert [type(item).__name__ for item in items] == ["QuarantineRecord", "Document"]


def test_jsonl_invalid_utf8_line_is_quarantined(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", b'{"_id": "1", "text": "caf\xe9"}\n{"_id": "2", "text": "fine"}\n')
    items = list(JsonlSource(path).items())
    assert items[0].reason == datasets.REASON_MALFORMED_JSON and "UTF-8" in items[0].detail
    assert items[1].doc_id == "d/2"


def test_jsonl_oversized_record_is_quarantined(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"_id": "1", "text": "x" * 11}, {"_id": "2", "text": "x" * 10}])
    items = list(JsonlSource(path, max_record_bytes=10).items())
    assert [getattr(item, "reason", "ok") for item in items] == [datasets.REASON_TOO_LARGE, "ok"]


def test_jsonl_streams_one_line_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"_id": str(n), "text": f"doc {n}"} for n in range(1000)])
    parsed: list[str] = []
    real_loads = json.loads
    monkeypatch.setattr(datasets.json, "loads", lambda text: parsed.append(text) or real_loads(text))

    items = JsonlSource(path).items()
    assert next(items).doc_id == "d/0"
    assert len(parsed) == 1


@pytest.mark.parametrize(
    ("relative", "name"),
    [("scifact/corpus.jsonl", "scifact"), ("dumps/articles.jsonl", "articles"), ("x/corpus.parquet", "corpus")],
)
def test_dataset_name_defaults(tmp_path: Path, relative: str, name: str) -> None:
    assert datasets.default_dataset_name(tmp_path / relative) == name


def test_missing_jsonl_raises_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open"):
        list(JsonlSource(tmp_path / "missing.jsonl").items())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (math.nan, None),
        (math.inf, None),
        ("s", "s"),
        (3, 3),
        (2.5, 2.5),
        (True, True),
        (["a"], ["a"]),
        ([], []),
        (("a", "b"), ["a", "b"]),
        ([1, 2], "[1, 2]"),
        ({"k": None}, '{"k": null}'),
        (2**64 - 1, 2**64 - 1),
        (-(2**63), -(2**63)),
        (-(2**63) - 1, "-9223372036854775809"),
        (2**70, "1180591620717411303424"),
    ],
)
def test_metadata_value(value: object, expected: object) -> None:
    assert metadata_value(value) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(json_values)
def test_metadata_value_is_always_pinecone_compatible(value: object) -> None:
    converted = metadata_value(value)
    assert (
        converted is None
        or isinstance(converted, (str, int, float, bool))
        or (isinstance(converted, list) and all(isinstance(item, str) for item in converted))
    )


# --- ParquetSource ---------------------------------------------------------------------------------------------


def test_parquet_rows_become_documents_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "articles.parquet"
    table = pa.table(
        {
            "_id": ["a", "b", "c", "a", "e"],
            "title": ["A", None, "C", "dup", "E"],
            "text": ["alpha", "beta", None, "again", "epsilon"],
            "lang": ["en", None, "de", "en", "fr"],
            "metadata": [{"year": 2020}, {"year": None}, None, None, {"year": 2024}],
        }
    )
    pq.write_table(table, path)

    items = list(ParquetSource(path, batch_size=2).items())

    assert [(item.doc_id, getattr(item, "reason", "ok")) for item in items] == [
        ("articles/a", "ok"),
        ("articles/b", "ok"),
        ("articles/c", datasets.REASON_MISSING_TEXT),
        ("articles/a", datasets.REASON_DUPLICATE_ID),
        ("articles/e", "ok"),
    ]
    assert items[0].metadata == {"lang": "en", "year": 2020, "source": "articles", "format": "parquet"}
    assert items[1].title == "" and items[1].metadata == {"source": "articles", "format": "parquet"}
    assert items[0].uri == f"{path.resolve().as_uri()}#a"
    assert items[3].detail == "row 4: id 'a' already used at row 1"


def test_parquet_integer_id_column_named_id(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [10], "text": ["ten"]}), path)
    assert only_document(ParquetSource(path)).doc_id == "t/10"


def test_parquet_without_required_columns_raises(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1], "body": ["no text column"]}), path)
    with pytest.raises(SourceError, match="'text' column"):
        list(ParquetSource(path).items())


def test_not_a_parquet_file_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "t.parquet", "not parquet")
    with pytest.raises(SourceError, match="cannot read parquet"):
        list(ParquetSource(path).items())


# --- open_source -----------------------------------------------------------------------------------------------


def test_open_source_picks_by_path(tmp_path: Path) -> None:
    beir = write_jsonl(tmp_path / "nfcorpus" / "corpus.jsonl", [{"_id": "1", "text": "t"}]).parent
    folder = write(tmp_path / "notes" / "a.md", "x").parent
    jsonl = write_jsonl(tmp_path / "records.jsonl", [{"_id": "1", "text": "t"}])
    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"_id": ["1"], "text": ["t"]}), parquet)

    picked = {path.name: open_source(path) for path in (beir, folder, jsonl, parquet)}

    assert {key: (type(source).__name__, source.name) for key, source in picked.items()} == {
        "nfcorpus": ("JsonlSource", "nfcorpus"),
        "notes": ("DirectorySource", "notes"),
        "records.jsonl": ("JsonlSource", "records"),
        "rows.parquet": ("ParquetSource", "rows"),
    }


def test_open_source_passes_name_and_size_limit(tmp_path: Path) -> None:
    write(tmp_path / "notes" / "a.md", "x" * 20)
    source = open_source(tmp_path / "notes", name="kb", max_file_bytes=10)
    assert only_quarantine(source).doc_id == "kb/a.md"


@pytest.mark.parametrize("relative", ["missing", "file.csv"])
def test_open_source_rejects_unknown_paths(tmp_path: Path, relative: str) -> None:
    write(tmp_path / "file.csv", "a,b\n")
    with pytest.raises(SourceError):
        open_source(tmp_path / relative)


# --- a real BEIR corpus (the committed Cranfield slice, read in place) ----------------------------------------------


def test_cranfield_beir_corpus() -> None:
    source = open_source(CRANFIELD)
    items = list(source.items())
    docs = documents(items)

    assert source.name == "cranfield" and len(items) == 200
    assert len(docs) == 200 and list(docs)[:2] == ["cranfield/1", "cranfield/2"]
    assert quarantined(items) == []
    first = docs["cranfield/1"]
    assert first.title.startswith("experimental investigation of the aerodynamics of a wing")
    assert first.uri == (CRANFIELD / "corpus.jsonl").as_uri() + "#1"
    assert set(first.metadata) == {"author", "bib", "source", "format"}


# --- the sample corpus ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_items() -> list[SourceItem]:
    return list(DirectorySource(SAMPLE, name="sample").items())


def test_sample_corpus_loads_cleanly(sample_items: list[SourceItem]) -> None:
    docs = documents(sample_items)
    formats = sorted(doc.metadata["format"] for doc in docs.values())
    assert quarantined(sample_items) == []
    assert 30 <= len(docs) <= 40
    assert {"md", "txt", "html"} <= set(formats) and formats.count("md") > len(docs) / 2
    assert len({doc.title for doc in docs.values()}) == len(docs)
    assert all(doc.doc_id.count("/") >= 2 for doc in docs.values()), "every sample file sits in a subfolder"


def test_sample_documents_are_sized_and_structured(sample_items: list[SourceItem]) -> None:
    for doc in documents(sample_items).values():
        assert 150 <= len(doc.text.split()) <= 600, doc.doc_id
        if doc.kind == "markdown":
            assert "\n## " in doc.text, f"{doc.doc_id} has no second-level heading"


def test_sample_queries_and_qrels_are_consistent(sample_items: list[SourceItem]) -> None:
    queries = [json.loads(line) for line in (SAMPLE / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    with (SAMPLE / "qrels.tsv").open(encoding="utf-8", newline="") as handle:
        qrels = list(csv.DictReader(handle, delimiter="\t"))
    doc_ids = set(documents(sample_items))
    query_ids = [query["_id"] for query in queries]

    assert len(queries) >= 30 and len(set(query_ids)) == len(query_ids)
    assert all(query["text"].strip() for query in queries)
    assert list(qrels[0]) == ["query-id", "corpus-id", "score"]
    assert {row["corpus-id"] for row in qrels} <= doc_ids
    assert {row["query-id"] for row in qrels} == set(query_ids)
    assert {row["score"] for row in qrels} <= {"1", "2"}
    assert len({(row["query-id"], row["corpus-id"]) for row in qrels}) == len(qrels)
