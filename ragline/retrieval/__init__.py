"""Retrieval over one namespace: dense, BM25 and hybrid modes, query understanding, expansion and reranking.

``search`` is the entry point; ``refresh_bm25`` keeps a namespace's BM25 index in sync (ingest calls it after
a commit).
"""

from ragline.errors import ChatError
from ragline.retrieval.bm25 import BM25Params, refresh_bm25
from ragline.retrieval.chat import ChatSettings
from ragline.retrieval.fusion import FusionMethod
from ragline.retrieval.hits import Hit
from ragline.retrieval.search import MODES, Mode, RetrievalSettings, SearchResult, search

__all__ = [
    "MODES",
    "BM25Params",
    "ChatError",
    "ChatSettings",
    "FusionMethod",
    "Hit",
    "Mode",
    "RetrievalSettings",
    "SearchResult",
    "refresh_bm25",
    "search",
]
