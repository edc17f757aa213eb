"""Per-document locks built on unique-key inserts, for servers whose updates are not atomic.

FerretDB 1.x (SQLite backend) runs an update as read, modify in memory, write back by ``_id``,
outside any transaction: two concurrent ``update_one`` calls on one document can both match
their filter and the second write silently undoes the first (a lost update; measured here:
10 concurrent ``$inc`` with ``available >= 1`` on 5 units reported 8 successes). An insert
with a duplicate ``_id`` is refused atomically, so a lock is a document inserted under the
locked name and deleted afterwards. Every writer of a locked document takes its lock.
A holder that dies leaves its lock to expire after ``lease_s``. MongoDB's updates are atomic, and
so are those of the FerretDB that ``make infra-up`` builds (patched, see shared/local_infra.py), so
these locks are on only with ``mongo.document_locks: true``; otherwise NoLocks is used.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError
from pymongo.results import UpdateResult

from shared.mongo import DatabaseUnavailable

logger = logging.getLogger(__name__)


class LockBusy(DatabaseUnavailable):
    """A document stayed locked for too long; the caller may retry later (a transient condition)."""


class DocumentLocks:
    """Leased, non-reentrant named locks kept as documents in one collection."""

    costly = True  # two round trips per hold: worth a cheap read first when it may be avoided

    def __init__(self, collection: Collection, *, lease_s: float = 15.0, wait_s: float = 20.0) -> None:
        self._locks = collection
        # The lease is shorter than the wait so a crashed holder's lock is broken before waiters give up.
        self._lease = timedelta(seconds=lease_s)
        self._wait_s = wait_s

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Hold the lock called ``name`` for the duration of the block, waiting for it if needed."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self._wait_s
        delay = 0.002
        while not self._acquire(name, token):
            if time.monotonic() > deadline:
                raise LockBusy(f"{name} stayed locked for more than {self._wait_s:.0f}s")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 0.05)
        try:
            yield
        finally:
            self._locks.delete_one({"_id": name, "token": token})

    def _acquire(self, name: str, token: str) -> bool:
        now = datetime.now(UTC)
        try:
            self._locks.insert_one({"_id": name, "token": token, "expires_at": now + self._lease})
            return True
        except DuplicateKeyError:
            stale = self._locks.delete_one({"_id": name, "expires_at": {"$lt": now}})
            if stale.deleted_count:
                logger.warning("broke the expired lock %s (its holder stopped)", name)
            return False


class NoLocks:
    """For servers whose updates are atomic (MongoDB): holding a lock costs nothing."""

    costly = False

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Hold nothing: the server applies each update atomically."""
        yield


Locks = DocumentLocks | NoLocks


class LockingCollection:
    """A collection whose ``update_one`` by ``_id`` holds that document's lock; everything else passes through.

    Given to the shared OutboxRelay, so its clearing of published outbox entries (an update of the
    whole document on FerretDB) cannot overwrite a status change made at the same moment.
    """

    def __init__(self, collection: Collection, locks: Locks, prefix: str) -> None:
        self._collection = collection
        self._locks = locks
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def update_one(self, filter: Mapping[str, Any], update: Any, *args: Any, **kwargs: Any) -> UpdateResult:
        if "_id" not in filter:
            return self._collection.update_one(filter, update, *args, **kwargs)
        with self._locks.hold(f"{self._prefix}:{filter['_id']}"):
            return self._collection.update_one(filter, update, *args, **kwargs)

    def find_one_and_update(self, filter: Mapping[str, Any], update: Any, *args: Any, **kwargs: Any) -> Any:
        if "_id" not in filter:
            return self._collection.find_one_and_update(filter, update, *args, **kwargs)
        with self._locks.hold(f"{self._prefix}:{filter['_id']}"):
            return self._collection.find_one_and_update(filter, update, *args, **kwargs)
