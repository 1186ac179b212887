"""The source protocol: a stream of documents, with the inputs that could not be used quarantined."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, Union, runtime_checkable

from ragline.records import Document, QuarantineRecord

SourceItem = Union[Document, QuarantineRecord]


@runtime_checkable
class Source(Protocol):
    """Yields documents one at a time (never a whole corpus in memory); bad inputs come as quarantine records."""

    name: str
    """Prefix of every doc_id from this source; deletions of vanished documents are scoped to it."""

    def items(self) -> Iterator[SourceItem]:
        """Documents and quarantine records, in a stable order."""
        ...
