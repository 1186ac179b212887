"""API keys: tenant keys, each allowed to read a set of namespaces, and one operator key for metrics and API docs.
Only SHA-256 digests are kept, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from ragline.errors import ConfigError
from ragline.names import check_name

DIGEST_PREFIX = "sha256:"
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
"""What a key may hold: HTTP header values arrive as latin-1 and are stripped, so only visible ASCII compares
equal on both sides."""


@dataclass(frozen=True)
class Principal:
    """An authenticated tenant: its key's ``digest`` (hex) and the namespaces it may read."""

    digest: str
    namespaces: frozenset[str]

    @property
    def key_id(self) -> str:
        """A digest prefix that names the key in logs."""
        return self.digest[:12]


def key_digest(key: str) -> str:
    """The hex SHA-256 of an API key, the form ``service_api_keys`` may hold it in (after ``sha256:``)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """The configured keys; ``authenticate`` and ``is_operator`` compare a presented key's digest with every stored
    one, so timing tells nothing."""

    def __init__(self, keys: Mapping[SecretStr, Sequence[str]], operator_key: SecretStr | None = None) -> None:
        if not keys:
            raise ConfigError(
                "the query service needs API keys: set service_api_keys (key → namespaces), "
                'e.g. RAGLINE_SERVICE_API_KEYS=\'{"<key>": ["default"]}\''
            )
        self._entries: list[tuple[bytes, Principal]] = []
        for number, (key, namespaces) in enumerate(keys.items(), start=1):
            setting = f"service_api_keys entry {number}"
            digest = _stored_digest(key.get_secret_value(), setting)
            if self._tenant(digest) is not None:
                raise ConfigError(f"{setting} repeats an earlier key")
            if not namespaces:
                raise ConfigError(f"{setting} allows no namespace")
            for namespace in namespaces:
                try:
                    check_name(namespace)
                except ValueError as exc:
                    raise ConfigError(f"{setting}: namespace {namespace!r} {exc}") from None
            self._entries.append((digest, Principal(digest=digest.hex(), namespaces=frozenset(namespaces))))
        self._operator: bytes | None = None
        if operator_key is not None:
            self._operator = _stored_digest(operator_key.get_secret_value(), "service_operator_key")
            if self._tenant(self._operator) is not None:
                raise ConfigError("service_operator_key is also a tenant key in service_api_keys; give it its own")

    @property
    def has_operator(self) -> bool:
        return self._operator is not None

    def authenticate(self, presented: str | None) -> Principal | None:
        """The tenant ``presented`` belongs to, or None."""
        return self._tenant(bytes.fromhex(key_digest(presented))) if presented else None

    def is_operator(self, presented: str | None) -> bool:
        """Whether ``presented`` is the operator key (False when none is configured)."""
        if not presented or self._operator is None:
            return False
        return hmac.compare_digest(self._operator, bytes.fromhex(key_digest(presented)))

    def _tenant(self, digest: bytes) -> Principal | None:
        found = None
        for stored, principal in self._entries:
            if hmac.compare_digest(stored, digest):
                found = principal
        return found


def _stored_digest(value: str, setting: str) -> bytes:
    """A configured key as its digest: ``sha256:<hex>`` is taken as is, anything else is a clear key to hash."""
    if value.startswith(DIGEST_PREFIX):
        hex_digest = value.removeprefix(DIGEST_PREFIX).lower()
        if not _HEX_DIGEST.fullmatch(hex_digest):
            raise ConfigError(f"{setting}: 'sha256:' must be followed by 64 hex digits")
        return bytes.fromhex(hex_digest)
    if not _HEADER_SAFE.fullmatch(value):
        raise ConfigError(
            f"{setting}: a key must be printable ASCII without spaces (an HTTP header cannot carry anything else)"
        )
    if len(value) < 16:
        raise ConfigError(f"{setting}: a key must have at least 16 characters")
    return bytes.fromhex(key_digest(value))
