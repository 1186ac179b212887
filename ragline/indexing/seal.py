"""Seals: a run that changes nothing trusts an index it verified before, without opening it.

A run that commits with its index checked leaves a seal beside the namespace's files: the committed run (the
namespace's generation), a fingerprint of the files and the vector count they hold. The next run opens with that
seal when both still match: the files are byte for byte the ones that were checked. As long as the run writes
nothing to the index (``still_sealed``), its checks against the index (whole index at open, vector counts at verify
and commit, sampled fetch-back) take the count from the seal instead of reading the index, so an unchanged re-run
never imports the store's client. Any write (this run's, a repair's, another tool's) and any damage changes the
fingerprint, and a record store restored from a backup has another generation: then every check reads the index.
Stores whose files are not on this host (Pinecone) have no fingerprint and are always read.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ragline.components import Components

log = logging.getLogger(__name__)


@runtime_checkable
class FingerprintedStore(Protocol):
    """A store whose namespaces live in local files it can fingerprint without opening them."""

    def fingerprint(self, namespace: str) -> str | None:
        """A digest that changes with every write to the namespace; None when it has no files, or when the store
        wants the next run to read the index and run its housekeeping (nothing is then sealed)."""
        ...

    def seal_path(self, namespace: str) -> Path:
        """Where the namespace's seal is kept."""
        ...


@dataclass(frozen=True)
class Seal:
    """What the last committed run checked: the index files' fingerprint and the vectors they hold."""

    fingerprint: str
    vectors: int


def current_seal(c: Components, namespace: str) -> Seal | None:
    """The namespace's seal if it still holds (same generation, same files); read before a run opens."""
    store = c.store
    if not isinstance(store, FingerprintedStore):
        return None
    try:
        saved = json.loads(store.seal_path(namespace).read_text(encoding="utf-8"))
        generation, fingerprint, vectors = saved["generation"], saved["fingerprint"], int(saved["vectors"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if generation is None or generation != c.records.journal.read_generation(namespace):
        return None
    if fingerprint is None or fingerprint != store.fingerprint(namespace):
        return None
    return Seal(fingerprint, vectors)


def still_sealed(c: Components, namespace: str, seal: Seal | None) -> Seal | None:
    """``seal`` if the index still has exactly the sealed files (nothing written since the run opened), else None."""
    store = c.store
    if seal is None or not isinstance(store, FingerprintedStore) or store.fingerprint(namespace) != seal.fingerprint:
        return None
    return seal


def write_seal(c: Components, namespace: str, vectors: int) -> None:
    """Seal the namespace after a committed run checked that its index holds ``vectors`` vectors."""
    store = c.store
    if not isinstance(store, FingerprintedStore):
        return
    generation = c.records.journal.read_generation(namespace)
    fingerprint = store.fingerprint(namespace)
    path = store.seal_path(namespace)
    if generation is None or fingerprint is None:
        path.unlink(missing_ok=True)
        return
    text = json.dumps({"generation": generation, "fingerprint": fingerprint, "vectors": vectors})
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:  # a missing seal only costs the next run a read of the index
        log.warning("could not seal namespace %s: %s", namespace, exc)
        temporary.unlink(missing_ok=True)
