"""Sentences of retrieved text and of answers, and the ``[n]`` citation markers inside answers.

An answer's markers are ragline's own: citation-like markers printed inside a document ("95 percent [3][12]",
"[7-9]", "[[2]]") are stripped from its sentences before any is quoted or sent to a model, and a document's
question sentences are never quoted as an answer.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')]))\s+(?=[\"'(]?[A-Z0-9])")
_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_MARKERS_AFTER_STOP = re.compile(r"([.!?])((?:\s*\[\d+(?:\s*,\s*\d+)*\])+)")
_PRINTED_MARKER = re.compile(r"\s*\[\s*\d+(?:\s*[-–,;]\s*\d+)*\s*\]")
"""A citation-like marker as documents print them: ``[3]``, ``[3, 12]``, ``[7-9]``, ``[12–14]``."""
_QUESTION_LABEL = re.compile(r"^(?:q|question)\s*[:.)]\s", re.IGNORECASE)
_MIN_WORDS_WITHOUT_STOP = 12
"""A line with no sentence-ending punctuation is a heading unless it is at least this long."""


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``: lines split at sentence ends; headings (``#`` lines, short unpunctuated lines)
    and whitespace runs dropped."""
    sentences = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line or line.startswith("#"):
            continue
        if not line.endswith((".", "!", "?", ".)", '."')) and len(line.split()) < _MIN_WORDS_WITHOUT_STOP:
            continue
        sentences += [part.strip() for part in _SENTENCE_END.split(line) if part.strip()]
    return sentences


def answer_sentences(text: str) -> list[str]:
    """The sentences of a retrieved ``text`` an answer may quote: its statements, printed markers stripped."""
    return [sentence for sentence in split_sentences(strip_markers(text)) if not is_question(sentence)]


def strip_markers(text: str) -> str:
    """``text`` without citation-like markers (removed until none is left, so ``[1[2]]`` goes too)."""
    while (stripped := _PRINTED_MARKER.sub("", text)) != text:
        text = stripped
    return text


def is_question(sentence: str) -> bool:
    """Whether ``sentence`` asks rather than tells: it ends with "?" (before closing quotes or brackets) or is
    labelled as a question ("Q: ...", "Question: ...")."""
    return sentence.rstrip(" \"')]").endswith("?") or bool(_QUESTION_LABEL.match(sentence))


def citation_numbers(text: str) -> list[int]:
    """Every number cited with a ``[n]`` or ``[n, m]`` marker in ``text``, in order (repeats kept)."""
    return [int(n) for marker in _MARKER.finditer(text) for n in marker.group(1).split(",")]


def without_markers(text: str) -> str:
    """``text`` with its citation markers removed and spacing tidied."""
    return re.sub(r"\s+([.,;:!?])", r"\1", " ".join(_MARKER.sub(" ", text).split()))


def keep_markers(text: str, allowed: set[int]) -> str:
    """``text`` with every cited number outside ``allowed`` taken out of its marker (empty markers removed)."""

    def rewrite(marker: re.Match[str]) -> str:
        kept = [n for n in marker.group(1).split(",") if int(n) in allowed]
        return f"[{', '.join(n.strip() for n in kept)}]" if kept else ""

    return re.sub(r" +([.,;:!?])", r"\1", re.sub(r"  +", " ", _MARKER.sub(rewrite, text))).strip()


def markers_before_stops(text: str) -> str:
    """``text`` with markers that follow a sentence's final punctuation moved in front of it: ``a. [1]`` → ``a [1].``"""
    return _MARKERS_AFTER_STOP.sub(lambda m: f"{m.group(2).rstrip()}{m.group(1)}", text)


def cited_sentences(answer: str) -> list[tuple[str, list[int]]]:
    """Each sentence of ``answer`` without its markers, with the source numbers it cites."""
    pieces = []
    for line in answer.splitlines():
        pieces += [p for p in _SENTENCE_END.split(markers_before_stops(" ".join(line.split()))) if p.strip()]
    return [(without_markers(piece), citation_numbers(piece)) for piece in pieces if without_markers(piece)]
