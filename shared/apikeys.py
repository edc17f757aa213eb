"""API keys of operators, admins, back ends and the services themselves.

A key is ``ek_<key id>_<secret>``: the id finds the stored entry, the secret is checked against its
hash. Only the SHA-256 of the secret is stored (the secret is 32 random bytes, so a plain hash is
as good as a slow one), and the whole key is shown once, when it is made. Every process caches
what it looked up for ``auth.key_cache_s`` seconds, which is how long a revocation takes to bite.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from pymongo.collection import Collection

logger = logging.getLogger(__name__)

KEY_PREFIX = "ek_"
# How long a key read before an outage of the store is still trusted while the store is down.
STALE_LIMIT_S = 900.0
KEY_PATTERN = re.compile(r"^ek_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:@-]{0,79}$")


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    secret_sha256: str = field(repr=False)
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        """What listing a key shows: never the hash."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


class KeyStore(Protocol):
    """Where keys are kept: Mongo in the services, a dict in unit tests."""

    def get(self, key_id: str) -> StoredKey | None: ...

    def add(self, key: StoredKey) -> None: ...

    def all(self) -> list[StoredKey]: ...

    def revoke(self, key_id: str, at: datetime) -> bool: ...


def new_key(name: str, scopes: Iterable[str], known_scopes: Iterable[str]) -> tuple[str, StoredKey]:
    """Make a key: the whole key (shown once) and what is stored of it."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError("a key's name is 1-80 letters, digits, spaces or ._:@- and starts with a letter or digit")
    wanted = tuple(dict.fromkeys(scopes))
    unknown = sorted(set(wanted) - set(known_scopes))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    if not wanted:
        raise ValueError("a key needs at least one scope")
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    stored = StoredKey(key_id, name, wanted, _sha256(secret), datetime.now(UTC))
    return f"{KEY_PREFIX}{key_id}_{secret}", stored


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyCache:
    """Checks presented keys against the store, remembering each lookup for ``ttl_s`` seconds
    (unknown ids too, so a flood of made-up keys does not become a flood of reads)."""

    def __init__(self, store: KeyStore, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._store, self._ttl, self._clock = store, ttl_s, clock
        self._entries: dict[str, tuple[float, StoredKey | None]] = {}
        self._lock = threading.Lock()

    def check(self, presented: str) -> StoredKey | None:
        """The active key ``presented`` is, or None when it is malformed, unknown, wrong or revoked."""
        match = KEY_PATTERN.fullmatch(presented)
        if not match:
            return None
        key_id, secret = match.groups()
        stored = self._lookup(key_id)
        if stored is None or not stored.active:
            return None
        return stored if hmac.compare_digest(stored.secret_sha256, _sha256(secret)) else None

    def _lookup(self, key_id: str) -> StoredKey | None:
        now = self._clock()
        with self._lock:
            cached = self._entries.get(key_id)
        if cached and now - cached[0] < self._ttl:
            return cached[1]
        try:
            stored = self._store.get(key_id)
        except Exception:
            # The store is down: keep answering with what was last read (operators need
            # /health/detailed most during an outage), for up to STALE_LIMIT_S; a key never seen
            # cannot be checked, and the caller answers 503.
            if cached and now - cached[0] < STALE_LIMIT_S:
                logger.warning("key store unavailable; using the cached entry of key %s", key_id)
                return cached[1]
            raise
        with self._lock:
            if len(self._entries) > 10_000:  # made-up ids must not grow the cache without bound
                self._entries.clear()
            self._entries[key_id] = (now, stored)
        return stored


class MongoKeyStore:
    """Keys in the ``api_keys`` collection of the auth database, shared by all services."""

    def __init__(self, collection: Collection) -> None:
        self._keys = collection

    def audit_entries(self) -> Collection:
        """The audit trail kept beside the keys (shared/audit.py)."""
        return self._keys.database["audit"]

    def rate_counters(self) -> Collection:
        """The rate-limit counters kept beside the keys (shared/ratelimits.py)."""
        return self._keys.database["rate_limits"]

    def get(self, key_id: str) -> StoredKey | None:
        doc = self._keys.find_one({"_id": key_id})
        return _from_doc(doc) if doc else None

    def add(self, key: StoredKey) -> None:
        self._keys.insert_one(
            {
                "_id": key.key_id,
                "name": key.name,
                "scopes": list(key.scopes),
                "secret_sha256": key.secret_sha256,
                "created_at": key.created_at,
                "revoked_at": key.revoked_at,
            }
        )

    def all(self) -> list[StoredKey]:
        return [_from_doc(doc) for doc in self._keys.find().sort("created_at", 1)]

    def revoke(self, key_id: str, at: datetime) -> bool:
        result = self._keys.update_one({"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": at}})
        return result.modified_count == 1


class InMemoryKeyStore:
    """A key store in a dict: for unit tests and ``AUTH_MODE=off`` runs without a database."""

    def __init__(self) -> None:
        self._keys: dict[str, StoredKey] = {}
        self.reads = 0

    def get(self, key_id: str) -> StoredKey | None:
        self.reads += 1
        return self._keys.get(key_id)

    def add(self, key: StoredKey) -> None:
        if key.key_id in self._keys:
            raise ValueError(f"key {key.key_id} exists")
        self._keys[key.key_id] = key

    def all(self) -> list[StoredKey]:
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    def revoke(self, key_id: str, at: datetime) -> bool:
        key = self._keys.get(key_id)
        if key is None or not key.active:
            return False
        self._keys[key_id] = replace(key, revoked_at=at)
        return True


def _from_doc(doc: dict[str, Any]) -> StoredKey:
    def aware(value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    return StoredKey(
        key_id=doc["_id"],
        name=doc["name"],
        scopes=tuple(doc["scopes"]),
        secret_sha256=doc["secret_sha256"],
        created_at=aware(doc["created_at"]) or datetime.now(UTC),
        revoked_at=aware(doc.get("revoked_at")),
    )
