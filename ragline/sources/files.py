"""Documents from a folder tree: Markdown, plain text, HTML and PDF, walked lazily in a stable order.

The walk is depth-first with each folder's entries sorted by name (code point order), so ids and order are the
same on every run. Only one folder listing and one file are in memory at a time. Hidden entries (``.name``) and
unsupported extensions are skipped silently; a file that cannot be used becomes a ``QuarantineRecord``.
Directory symlinks are never followed; a file symlink is read only if its target stays inside the root.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ragline.errors import SourceError
from ragline.records import Document, Metadata, QuarantineRecord, make_doc_id
from ragline.sources.base import SourceItem

if TYPE_CHECKING:
    from bs4 import BeautifulSoup

REASON_BINARY = "binary file"
REASON_UNDECODABLE = "not valid UTF-8"
REASON_EMPTY = "empty document"
REASON_TOO_LARGE = "file too large"
REASON_UNREADABLE = "unreadable file"
REASON_PDF_UNPARSEABLE = "PDF could not be parsed"
REASON_PDF_NO_TEXT = "PDF has no extractable text"
REASON_ESCAPES_ROOT = "path escapes source root"
REASON_HTML_TOO_DEEP = "HTML nested too deeply"

MAX_HTML_DEPTH = 512
"""Deeper element nesting is quarantined: BeautifulSoup's tree edits cost time quadratic in the depth."""

FORMAT_BY_SUFFIX = {".md": "md", ".markdown": "md", ".txt": "txt", ".html": "html", ".htm": "html", ".pdf": "pdf"}
KIND_BY_FORMAT = {"md": "markdown", "html": "markdown", "txt": "text", "pdf": "text"}

_DROPPED_HTML_TAGS = ["head", "script", "style", "nav", "noscript", "template"]
_HTML_HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]
_HTML_BLOCKS = (
    "address article aside blockquote dd div dl dt figcaption figure footer form header hr main ol p pre section"
    " table tr ul"
).split()
_WHITESPACE_RUN = re.compile(r"\s+")
_HTML_TAG = re.compile(rb"<(/?)([A-Za-z][A-Za-z0-9-]*)[^>]*>")
_HTML_VOID_TAGS = frozenset(b"area base br col embed hr img input link meta param source track wbr".split())
_MARKDOWN_H1 = re.compile(r"^ {0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(?P<body>[\w-]+:.*?)^(?:---|\.\.\.)[ \t]*$\n?", re.DOTALL | re.MULTILINE)
_FRONT_MATTER_TITLE = re.compile(r"^title:[ \t]*(?P<title>.+?)[ \t]*$", re.MULTILINE)

Extracted = tuple[str | None, str]
"""What an extractor returns: the title it found (if any) and the document text."""


class _Rejected(Exception):
    """Raised while loading a file that must be quarantined; never leaves this module."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class DirectorySource:
    """Every .md/.markdown, .txt, .html/.htm and .pdf file under ``root``; doc ids are ``name/relative/path``."""

    def __init__(self, root: Path, name: str | None = None, max_file_bytes: int = 10_000_000) -> None:
        self.root = Path(os.path.abspath(root))
        self.name = name or self.root.name
        self.max_file_bytes = max_file_bytes
        self._real_root = Path(os.path.realpath(self.root))

    def items(self) -> Iterator[SourceItem]:
        """Documents and quarantine records, depth-first in name order; raises ``SourceError`` if root is no folder."""
        if not self.name:
            raise SourceError(f"cannot derive a source name from {self.root}; pass name=")
        if not self.root.is_dir():
            raise SourceError(f"source root is not a directory: {self.root}")
        yield from self._items_under(self._real_root)

    def _items_under(self, directory: Path) -> Iterator[SourceItem]:
        try:
            entries = _sorted_entries(directory)
        except OSError as exc:
            yield QuarantineRecord(source=self.name, uri=directory.as_uri(), reason=REASON_UNREADABLE, detail=str(exc))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from self._items_under(Path(entry.path))
            elif (file_format := _format_of(entry.name)) and not _is_directory_link(entry):
                yield self._load(Path(entry.path), file_format)

    def _load(self, path: Path, file_format: str) -> SourceItem:
        relative = path.relative_to(self._real_root).as_posix()
        doc_id = make_doc_id(self.name, relative)
        try:
            return self._document(path, file_format, relative, doc_id)
        except _Rejected as rejected:
            return QuarantineRecord(
                source=self.name, uri=path.as_uri(), reason=rejected.reason, doc_id=doc_id, detail=rejected.detail
            )

    def _document(self, path: Path, file_format: str, relative: str, doc_id: str) -> Document:
        self._check_inside_root(path)
        status = self._checked_stat(path)
        title, text = _EXTRACTORS[file_format](_read_bytes(path))
        if not text.strip():
            raise _Rejected(REASON_EMPTY, "no text after extraction")
        title = title or path.stem
        metadata: Metadata = {"source": self.name, "path": relative, "format": file_format}
        return Document(
            doc_id=doc_id,
            source=self.name,
            uri=path.as_uri(),
            title=title,
            text=text,
            content_hash=Document.hash_content(title, text, metadata),
            modified_at=status.st_mtime,
            metadata=metadata,
            kind=KIND_BY_FORMAT[file_format],
        )

    def _check_inside_root(self, path: Path) -> None:
        """A symlinked file must resolve to somewhere under the root; broken or looping links are unreadable."""
        if not path.is_symlink():
            return
        try:
            target = Path(os.path.realpath(path, strict=True))
        except OSError as exc:
            raise _Rejected(REASON_UNREADABLE, f"broken symlink: {exc}") from exc
        if not target.is_relative_to(self._real_root):
            raise _Rejected(REASON_ESCAPES_ROOT, f"symlink target {target} is outside {self._real_root}")

    def _checked_stat(self, path: Path) -> os.stat_result:
        """The file's status, checked (before any read) to be a regular file within the size limit."""
        try:
            status = path.stat()
        except OSError as exc:
            raise _Rejected(REASON_UNREADABLE, str(exc)) from exc
        if not stat.S_ISREG(status.st_mode):
            raise _Rejected(REASON_UNREADABLE, "not a regular file")
        if status.st_size > self.max_file_bytes:
            raise _Rejected(REASON_TOO_LARGE, f"{status.st_size} bytes > max_file_bytes {self.max_file_bytes}")
        return status


def _sorted_entries(directory: Path) -> list[os.DirEntry[str]]:
    with os.scandir(directory) as scan:
        return sorted(scan, key=lambda entry: entry.name)


def _format_of(file_name: str) -> str | None:
    return FORMAT_BY_SUFFIX.get(os.path.splitext(file_name)[1].lower())


def _is_directory_link(entry: os.DirEntry[str]) -> bool:
    """True for a symlink to a folder (never followed). A broken link is not one: loading quarantines it."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Rejected(REASON_UNREADABLE, str(exc)) from exc


def _decode(data: bytes) -> str:
    """UTF-8 text (a BOM is accepted) with ``\\n`` line ends; NUL bytes mean a binary file."""
    if b"\x00" in data:
        raise _Rejected(REASON_BINARY, "contains NUL bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Rejected(REASON_UNDECODABLE, f"invalid byte at offset {exc.start}") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _extract_text(data: bytes) -> Extracted:
    return None, _decode(data).strip()


def _extract_markdown(data: bytes) -> Extracted:
    """Front matter is dropped from the text; its ``title:`` wins over the first ``# `` heading."""
    text = _decode(data)
    front_matter_title = None
    if front_matter := _FRONT_MATTER.match(text):
        text = text[front_matter.end() :]
        if title_field := _FRONT_MATTER_TITLE.search(front_matter["body"]):
            front_matter_title = title_field["title"].strip("\"'").strip()
    return front_matter_title or _first_markdown_h1(text), text.strip()


def _first_markdown_h1(text: str) -> str | None:
    """The first ATX level-1 heading outside fenced code blocks."""
    fence: str | None = None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence:
            fence = None if stripped.startswith(fence) else fence
        elif stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif match := _MARKDOWN_H1.match(line):
            return match[1]
    return None


def _extract_html(data: bytes) -> Extracted:
    """Markdown-like text: h1-h6 become ``#`` lines, blocks become paragraphs, script/style/nav are dropped."""
    from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning

    text = _decode(data)
    _check_html_depth(data)
    with warnings.catch_warnings():  # short text like "see docs/x.md" is still HTML here, not a file name
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(text, "html.parser")
    title = _html_title(soup)
    for tag in soup.find_all(_DROPPED_HTML_TAGS):
        tag.decompose()
    _collapse_source_whitespace(soup)
    _headings_to_markdown(soup)
    _separate_blocks(soup)
    return title, _tidy_lines(soup.get_text())


def _check_html_depth(data: bytes) -> None:
    """Reject markup whose open tags (void and self-closed ones aside) nest deeper than ``MAX_HTML_DEPTH``."""
    depth = 0
    for tag in _HTML_TAG.finditer(data):
        if tag[2].lower() in _HTML_VOID_TAGS or tag[0].endswith(b"/>"):
            continue
        depth = max(depth - 1, 0) if tag[1] else depth + 1
        if depth > MAX_HTML_DEPTH:
            raise _Rejected(REASON_HTML_TOO_DEEP, f"elements nested more than {MAX_HTML_DEPTH} deep")


def _html_title(soup: BeautifulSoup) -> str | None:
    for tag in (soup.title, soup.find("h1")):
        if tag is not None and (text := _single_line(tag.get_text())):
            return text
    return None


def _collapse_source_whitespace(soup: BeautifulSoup) -> None:
    """Line breaks in HTML source are just spaces (outside ``<pre>``): only tags start new lines."""
    from bs4.element import NavigableString

    for string in soup.find_all(string=True):
        if type(string) is NavigableString and string.find_parent("pre") is None:
            string.replace_with(_WHITESPACE_RUN.sub(" ", string))


def _headings_to_markdown(soup: BeautifulSoup) -> None:
    for heading in soup.find_all(_HTML_HEADINGS):
        text = _single_line(heading.get_text())
        heading.replace_with(f"\n\n{'#' * int(heading.name[1])} {text}\n\n" if text else "")


def _separate_blocks(soup: BeautifulSoup) -> None:
    """Put blank lines around block elements, a bullet before list items, breaks for ``<br>``, spaces between cells."""
    for tag in soup.find_all("br"):
        tag.replace_with("\n")
    for tag in soup.find_all("li"):
        tag.insert_before("\n- ")
    for tag in soup.find_all(["td", "th"]):
        tag.insert_after(" ")
    for tag in soup.find_all(_HTML_BLOCKS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")


def _single_line(text: str) -> str:
    return " ".join(text.split())


def _tidy_lines(text: str) -> str:
    """Collapse spaces within lines and runs of blank lines into one."""
    lines = "\n".join(_single_line(line) for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", lines).strip()


def _extract_pdf(data: bytes) -> Extracted:
    """The text of every page, pages separated by a blank line; the title from the PDF's metadata."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except Exception as exc:  # pypdf raises many exception types on malformed input
        raise _Rejected(REASON_PDF_UNPARSEABLE, f"{type(exc).__name__}: {exc}") from exc
    text = "\n\n".join(page for page in pages if page)
    if not text:
        raise _Rejected(REASON_PDF_NO_TEXT, f"{len(pages)} page(s), none with a text layer")
    return (_single_line(title) if isinstance(title, str) else None), text


_EXTRACTORS: dict[str, Callable[[bytes], Extracted]] = {
    "md": _extract_markdown,
    "txt": _extract_text,
    "html": _extract_html,
    "pdf": _extract_pdf,
}
