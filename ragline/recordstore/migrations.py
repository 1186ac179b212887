"""Schema versions of the record store: ordered migration steps that bring an older store up to date in place.

Each backend records the version its tables are at (SQLite: ``PRAGMA user_version``; PostgreSQL: the
``schema_version`` table). A new store is created at the current version directly; an older one applies the steps
above its version in order, each step and its version bump in one transaction, so a failed step leaves the store
at the last version it completed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ragline.errors import StoreError


@dataclass(frozen=True)
class Migration:
    """One step: the statements that bring a store from ``version - 1`` to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]


def steps_to_apply(current: int, target: int, steps: Sequence[Migration], *, store: str) -> list[Migration]:
    """The steps from ``current`` to ``target``, in order.

    Raises ``StoreError`` when the store is newer than this ragline or a step is missing or out of order.
    """
    if current > target:
        raise StoreError(
            f"{store} is at schema version {current}, newer than this ragline's {target}: upgrade ragline to use it"
        )
    wanted = [step for step in steps if step.version > current]
    if [step.version for step in wanted] != list(range(current + 1, target + 1)):
        raise StoreError(
            f"{store}: no ordered migration path from schema version {current} to {target} "
            f"(steps {[step.version for step in steps]})"
        )
    return wanted
