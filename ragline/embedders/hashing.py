"""A deterministic embedder with no model: word features hashed into a fixed dimension.

It knows nothing of meaning, only of shared words, so it is useless for retrieval quality and exactly right where
the pipeline around the embedder is under test or measured: the same text always gives the same unit vector, on
every machine and process, at a few microseconds per word. ``embedder = "hashing"`` selects it.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from ragline.words import ASCII_WORD

_WORDS = re.compile(r"\w+|[^\w\s]")
_ASCII_SPACE = frozenset(c for c in range(128) if re.fullmatch(r"\s", chr(c)))
_WORD_OR_BLANK = bytes(ord("a") if c in ASCII_WORD else ord(" ") for c in range(256))
"""A byte table making every ASCII word character ``a`` and every other byte a blank."""
_NOT_A_MARK = bytes(sorted(ASCII_WORD | _ASCII_SPACE))
"""The ASCII bytes that are no punctuation mark: word characters and whitespace."""


def count_words(text: str) -> int:
    """The hashing embedder's tokens: words and punctuation marks (``len(_WORDS.findall(text))``; an ASCII text is
    counted with byte tables instead, about 15× faster: the chunker counts every piece it sizes)."""
    if not text.isascii():
        return len(_WORDS.findall(text))
    raw = text.encode("ascii")
    return (b" " + raw.translate(_WORD_OR_BLANK)).count(b" a") + len(raw.translate(None, _NOT_A_MARK))


class HashingEmbedder:
    """Signed feature hashing of lower-cased words and word pairs (CRC-32), L2-normalised."""

    max_tokens = 256
    holds_the_interpreter = True
    """Its work is Python under the interpreter lock: a run's large batches embed in its worker processes."""

    def __init__(self, dimension: int = 384) -> None:
        self.dimension = dimension
        self.model_id = f"hashing/{dimension}"

    def count_tokens(self, text: str) -> int:
        """Words and punctuation marks."""
        return count_words(text)

    @property
    def token_counter(self) -> Callable[[str], int]:
        return count_words

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORDS.findall(text.lower())[: self.max_tokens]
            features = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
            codes = np.fromiter((zlib.crc32(f.encode()) for f in features), dtype=np.uint32, count=len(features))
            signs = np.where(codes & 1, 1.0, -1.0).astype(np.float32)
            np.add.at(vectors[row], (codes >> 1) % self.dimension, signs)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors[:, 0] += norms[:, 0] == 0  # a text without words still gets a unit vector
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
