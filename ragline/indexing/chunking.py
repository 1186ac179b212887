"""Token-aware chunking: Markdown headings first, then LangChain's recursive splitter sized in embedder tokens.

Decisions:
- Sizes are counted with the embedder's own ``count_tokens``; every chunk ends with 1..``chunk_size`` tokens and
  non-blank text. Pieces the recursive splitter leaves too long (its sums of per-piece counts are only an
  estimate of the joined text's count) are cut in halves near whitespace until they fit; token-less pieces
  (e.g. zero-width characters only) are dropped, so a document with no tokens yields no chunks.
- Overlap follows LangChain: the next chunk repeats up to ``chunk_overlap`` tokens of whole pieces (paragraphs,
  lines or words, whichever level the text was split at), so it is an upper bound, not a promise.
- Markdown: each section (a heading up to the next ``#``..``###`` heading) is chunked on its own, so sections
  never share a chunk. Headings stay in the text where they occur (a section's first chunk starts with its
  heading); the full heading path is in ``metadata["headings"]``. LangChain's header splitter strips every line,
  which loses indentation (also in code blocks); paragraph breaks are restored.
- ``Chunk.text`` is the exact text embedded: the document title is not prepended. Titles are in the metadata,
  and on the shared datasets the text already begins with the title (1,398 of 1,400 Cranfield abstracts).
- Speed: text that fits is counted once and kept whole; text with more words than ``chunk_size`` is not counted
  whole (every word costs a token). Longer text is split with a memo of piece counts (the splitter asks for each
  word's length up to three times): pieces of up to ``_SHORT_PIECE`` characters (words, mostly) share one bounded
  memo across documents, since words recur; longer pieces are remembered for one section only. Measured on the
  1,400 Cranfield abstracts with MiniLM's tokenizer (200/32): 0.7 s; 1.75 s with per-section memos only, 3.5 s
  with none. Chunking runs beside the model, so every second saved here is one the model gets back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

from ragline.errors import ChunkingError, ConfigError
from ragline.limits import MAX_ID_LENGTH, MAX_METADATA_BYTES
from ragline.records import Chunk, Document, Metadata, index_metadata, make_chunk_id, sha256_hex, stable_json

if TYPE_CHECKING:
    from langchain_text_splitters import MarkdownHeaderTextSplitter

CHUNKER_VERSION = "1"
"""Bump when the splitting algorithm changes: it is part of ``config_hash``, so every document is re-chunked."""

_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3")]
_SEPARATORS = ["\n\n", "\n", " ", ""]
_RESERVED_KEYS = frozenset({"doc_id", "source", "uri", "title", "position", "headings", "content_hash", "config_hash"})

ChunksOrReason = tuple[list[Chunk], str | None]
"""A document's chunks, or why it cannot be indexed (and no chunks)."""
_Piece = tuple[str, int]
"""A chunk's text and its token count."""
_SHORT_PIECE = 24
"""Pieces up to this many characters are counted through the chunker's shared memo."""
_SHORT_MEMO_SIZE = 1 << 16
"""Entries of the shared memo (bounded: a few MB whatever the corpus)."""


class Chunker:
    """Splits documents into chunks of at most ``chunk_size`` embedder tokens."""

    def __init__(
        self,
        count_tokens: Callable[[str], int],
        tokenizer_id: str,
        chunk_size: int,
        chunk_overlap: int,
        portable: bool = False,
    ) -> None:
        if chunk_size < 1:
            raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}")
        if not 0 <= chunk_overlap < chunk_size:
            raise ConfigError(f"chunk_overlap must be in 0..chunk_size-1, got {chunk_overlap}")
        if not tokenizer_id:
            raise ConfigError("tokenizer_id must not be empty")
        self._count = count_tokens
        self._count_short = lru_cache(maxsize=_SHORT_MEMO_SIZE)(count_tokens)
        self.tokenizer_id = tokenizer_id
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.portable = portable
        """``count_tokens`` pickles (an embedder's ``token_counter``): the chunker can work in a worker process."""

    def __reduce__(self) -> tuple[type[Chunker], tuple[Callable[[str], int], str, int, int, bool]]:
        """Pickles as its token counter and settings (a worker process starts with empty memos)."""
        return (Chunker, (self._count, self.tokenizer_id, self.chunk_size, self.chunk_overlap, self.portable))

    @cached_property
    def _markdown(self) -> MarkdownHeaderTextSplitter:
        from langchain_text_splitters import MarkdownHeaderTextSplitter  # imported when a document is split

        return MarkdownHeaderTextSplitter(headers_to_split_on=_HEADERS, strip_headers=False)

    @property
    def config_hash(self) -> str:
        """Short hash of everything that decides the chunks; a change re-chunks every document."""
        settings = [CHUNKER_VERSION, self.tokenizer_id, self.chunk_size, self.chunk_overlap]
        return sha256_hex(stable_json(settings))[:16]

    def split(self, doc: Document) -> list[Chunk]:
        """The document's chunks, ids ``doc_id#0..k-1`` in reading order; the same input gives the same chunks."""
        pieces = [
            (text, count, headings)
            for section, headings in self._sections(doc)
            for text, count in self._split_text(section)
        ]
        return [
            _make_chunk(doc, n, text, count, headings, self.config_hash)
            for n, (text, count, headings) in enumerate(pieces)
        ]

    def _sections(self, doc: Document) -> list[tuple[str, list[str]]]:
        """Markdown sections with their heading paths; any other kind is one section without headings."""
        if doc.kind != "markdown":
            return [(doc.text, [])]
        # the header splitter joins paragraphs with "  \n" (it strips every line, so nothing else makes one)
        return [
            (section.page_content.replace("  \n", "\n\n"), _heading_path(section.metadata))
            for section in self._markdown.split_text(doc.text)
        ]

    def _split_text(self, text: str) -> list[_Piece]:
        """Pieces of 1..chunk_size tokens covering ``text``."""
        text = text.strip()
        if not text:
            return []
        if len(text.split()) <= self.chunk_size:  # more words cannot fit: a word costs a token (zero-width aside)
            count = self._count(text)
            if count <= self.chunk_size:
                return [(text, count)] if count else []
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        counter = self._memoized()
        splitter = RecursiveCharacterTextSplitter(
            separators=_SEPARATORS,
            chunk_size=self.chunk_size,
            chunk_overlap=self.chunk_overlap,
            length_function=counter,
        )
        return [piece for part in splitter.split_text(text) for piece in self._fit(part, counter)]

    def _memoized(self) -> Callable[[str], int]:
        """The token counter remembering its answers: short pieces in the shared bounded memo, longer ones in a memo
        made per section, so it never outlives it."""
        memo: dict[str, int] = {}

        def count(text: str) -> int:
            if len(text) <= _SHORT_PIECE:
                return self._count_short(text)
            found = memo.get(text)
            if found is None:
                found = memo[text] = self._count(text)
            return found

        return count

    def _fit(self, text: str, count_tokens: Callable[[str], int]) -> list[_Piece]:
        """``text`` as one piece if it fits, else halved near whitespace until every part fits (a part the splitter
        made of one piece is counted already: ``count_tokens`` is its memo)."""
        text = text.strip()
        if not text:
            return []
        count = count_tokens(text)
        if count == 0:
            return []
        if count <= self.chunk_size:
            return [(text, count)]
        if len(text) == 1:
            raise ChunkingError(f"one character costs {count} tokens, more than chunk_size {self.chunk_size}")
        left, right = _halve(text)
        return self._fit(left, count_tokens) + self._fit(right, count_tokens)


def chunks_or_reasons(chunker: Chunker, documents: list[Document]) -> list[ChunksOrReason]:
    """Each document's chunks, or why it cannot be indexed (what a worker process runs for a large batch: this
    module imports little, so a worker stays small)."""
    return [_chunks_or_reason(chunker, doc) for doc in documents]


def _chunks_or_reason(chunker: Chunker, doc: Document) -> ChunksOrReason:
    try:
        chunks = chunker.split(doc)
    except ChunkingError as exc:
        return [], f"chunking failed: {exc}"
    if not chunks:
        return [], "no text to index after chunking"
    return chunks, oversized(chunks)


def oversized(chunks: Sequence[Chunk]) -> str | None:
    """Why a chunk is too large for the index (its id, or its index metadata), or None."""
    for ch in chunks:
        if len(ch.chunk_id) > MAX_ID_LENGTH:
            return f"chunk id is {len(ch.chunk_id)} characters, over the index's {MAX_ID_LENGTH}-character limit"
        size = len(json.dumps(index_metadata(ch.text, ch.metadata), ensure_ascii=False).encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            return f"chunk metadata is {size} bytes, over the index's {MAX_METADATA_BYTES}-byte limit"
    return None


def _heading_path(section_metadata: dict[str, str]) -> list[str]:
    """The section's non-empty headings, outermost first."""
    return [section_metadata[name] for _, name in _HEADERS if section_metadata.get(name)]


def _halve(text: str) -> tuple[str, str]:
    """Two parts of at least a quarter of ``text`` each, cut at a space near the middle when there is one."""
    size = len(text)
    middle = size // 2
    cut = text.rfind(" ", size // 4, middle + 1)
    if cut <= 0:
        cut = text.find(" ", middle, size - size // 4)
    if cut <= 0:
        cut = middle
    return text[:cut], text[cut:]


def _make_chunk(
    doc: Document, position: int, text: str, token_count: int, headings: list[str], config_hash: str
) -> Chunk:
    """A chunk of ``doc`` with the document's metadata plus its own identity and place, and the document's content
    and chunker hashes (so the index alone holds what the record store knows of it: ``ragline records
    rebuild``)."""
    metadata: Metadata = {key: value for key, value in doc.metadata.items() if key not in _RESERVED_KEYS}
    metadata.update(
        doc_id=doc.doc_id,
        source=doc.source,
        uri=doc.uri,
        title=doc.title,
        position=position,
        content_hash=doc.content_hash,
        config_hash=config_hash,
    )
    if headings:
        metadata["headings"] = list(headings)
    return Chunk(
        chunk_id=make_chunk_id(doc.doc_id, position),
        doc_id=doc.doc_id,
        position=position,
        text=text,
        text_hash=sha256_hex(text),
        token_count=token_count,
        metadata=metadata,
    )
