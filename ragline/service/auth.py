"""API keys, each allowed to read a set of namespaces. Only SHA-256 digests are kept, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from ragline.errors import ConfigError

DIGEST_PREFIX = "sha256:"
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: ``key_id`` (a digest prefix, safe to log) and the namespaces it may read."""

    key_id: str
    namespaces: frozenset[str]


def key_digest(key: str) -> str:
    """The hex SHA-256 of an API key, the form ``service_api_keys`` may hold it in (after ``sha256:``)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """The configured keys; ``authenticate`` compares a presented key's digest with every stored one."""

    def __init__(self, keys: Mapping[SecretStr, Sequence[str]]) -> None:
        if not keys:
            raise ConfigError(
                "the query service needs API keys: set service_api_keys (key → namespaces), "
                'e.g. RAGLINE_SERVICE_API_KEYS=\'{"<key>": ["default"]}\''
            )
        self._entries: list[tuple[bytes, Principal]] = []
        for number, (key, namespaces) in enumerate(keys.items(), start=1):
            digest = _stored_digest(key.get_secret_value(), number)
            if any(hmac.compare_digest(digest, stored) for stored, _ in self._entries):
                raise ConfigError(f"service_api_keys entry {number} repeats an earlier key")
            if not namespaces:
                raise ConfigError(f"service_api_keys entry {number} allows no namespace")
            self._entries.append((digest, Principal(key_id=digest.hex()[:12], namespaces=frozenset(namespaces))))

    def authenticate(self, presented: str | None) -> Principal | None:
        """The principal ``presented`` belongs to, or None. Every entry is compared, so timing tells nothing."""
        if not presented:
            return None
        digest = bytes.fromhex(key_digest(presented))
        found = None
        for stored, principal in self._entries:
            if hmac.compare_digest(stored, digest):
                found = principal
        return found


def _stored_digest(value: str, number: int) -> bytes:
    """A configured key as its digest: ``sha256:<hex>`` is taken as is, anything else is a clear key to hash."""
    if value.startswith(DIGEST_PREFIX):
        hex_digest = value.removeprefix(DIGEST_PREFIX).lower()
        if not _HEX_DIGEST.fullmatch(hex_digest):
            raise ConfigError(f"service_api_keys entry {number}: 'sha256:' must be followed by 64 hex digits")
        return bytes.fromhex(hex_digest)
    if len(value) < 16:
        raise ConfigError(f"service_api_keys entry {number}: a key must have at least 16 characters")
    return bytes.fromhex(key_digest(value))
