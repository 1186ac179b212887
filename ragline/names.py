"""Names users choose: namespaces and index versions, and the physical namespace of a version."""

from __future__ import annotations

VERSION_SEPARATOR = "--"


def check_name(value: str | None) -> str | None:
    """A namespace or version name: 1-100 ASCII letters, digits, '-', '_' or '.', not '.' or '..' (folders are
    named after it). None passes."""
    if value is not None and (
        not 0 < len(value) <= 100 or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in value)
    ):
        raise ValueError("must be 1-100 ASCII letters, digits, '-', '_' or '.'")
    if value in (".", ".."):
        raise ValueError("must not be '.' or '..'")
    return value


def version_namespace(name: str, version: str) -> str:
    """The physical namespace of ``version`` of ``name``: ``<name>--<version>``."""
    return f"{name}{VERSION_SEPARATOR}{version}"
