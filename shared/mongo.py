"""MongoDB access shared by every service: the client factory, the atomicity probe, outage detection
and the inbox."""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from pymongo import MongoClient, monitoring
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, OperationFailure

from shared.config import MongoSettings, Settings

MONGO_COMMANDS = Counter("mongo_commands_total", "Commands sent to MongoDB", ["command", "collection"])


class _CommandCounter(monitoring.CommandListener):
    """Count every round trip to the database, for the per-order cost figures."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        # CRUD commands name their collection as the command's value (``{"insert": "orders"}``).
        target = event.command.get(event.command_name)
        collection = target if isinstance(target, str) else ""
        MONGO_COMMANDS.labels(event.command_name, collection).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


class DatabaseUnavailable(Exception):
    """The database cannot be reached right now; the request may be retried later."""


class MongoAuthError(Exception):
    """The database refused our credentials."""


def duplicate_key_indexes(err: BulkWriteError) -> list[int]:
    """Return the indexes of a bulk write's statements that met an existing key; re-raise any other failure."""
    errors = err.details.get("writeErrors", [])
    if err.details.get("writeConcernErrors") or any(error.get("code") != 11000 for error in errors):
        raise err
    return [error["index"] for error in errors]


def insert_new(collection: Collection, docs: list[dict[str, Any]], chunk: int) -> list[bool]:
    """Insert the documents ``chunk`` at a time; return, in order, whether each was inserted
    (False: its ``_id`` exists)."""
    inserted = [True] * len(docs)
    for start in range(0, len(docs), chunk):
        try:
            collection.insert_many(docs[start : start + chunk], ordered=False)
        except BulkWriteError as err:
            for index in duplicate_key_indexes(err):
                inserted[start + index] = False
    return inserted


def make_mongo_client(mongo: MongoSettings, app_name: str = "kafka-ecommerce") -> MongoClient:
    """Create one client per process (after any fork); credentials come from settings, not the URI."""
    credentials = {}
    if mongo.username:
        credentials = {
            "username": mongo.username,
            "password": mongo.password.get_secret_value() if mongo.password else "",
        }
    return MongoClient(
        mongo.uri,
        appname=app_name,
        serverSelectionTimeoutMS=mongo.server_selection_timeout_ms,
        connectTimeoutMS=mongo.server_selection_timeout_ms,
        socketTimeoutMS=mongo.socket_timeout_ms,
        tz_aware=True,
        event_listeners=[_CommandCounter()],
        **credentials,
    )


ATOMICITY_PROBE = "atomicity_probe"  # the scratch collection of check_atomic_updates, in each service's database


class StoreNotAtomic(RuntimeError):
    """The store lost concurrent conditional updates of one document: it cannot run the services."""


def check_atomic_updates(collection: Collection, *, writers: int = 8, rounds: int = 8) -> None:
    """Race compare-and-set updates of one scratch document; raise StoreNotAtomic if one was lost.

    Every writer reads the counter and increments it only if it still holds what was read, as the
    services' versioned writes do. On an atomic store the counter ends at the number of updates the
    server said it applied. Stock FerretDB 1.x runs an update as read, modify, write back without
    a transaction, so two writers that read the same value can both be told they won while the
    counter moves once. About a hundred round trips, a few tens of milliseconds locally.
    """
    doc_id = f"probe-{uuid.uuid4().hex}"  # processes starting together each race on their own document
    collection.insert_one({"_id": doc_id, "n": 0})
    start = threading.Barrier(writers, timeout=30)

    def write() -> int:
        start.wait()
        applied = 0
        for _ in range(rounds):
            seen = collection.find_one({"_id": doc_id})["n"]
            applied += collection.update_one({"_id": doc_id, "n": seen}, {"$inc": {"n": 1}}).modified_count
        return applied

    try:
        with ThreadPoolExecutor(writers, thread_name_prefix="atomicity-probe") as pool:
            reported = sum(future.result() for future in [pool.submit(write) for _ in range(writers)])
        stored = collection.find_one({"_id": doc_id})["n"]
    finally:
        collection.delete_one({"_id": doc_id})
    if stored != reported:
        raise StoreNotAtomic(
            f"the MongoDB-protocol store lost {reported - stored} of {reported} concurrent conditional "
            f"updates of one document (the server reported {reported} applied, the document shows {stored}): "
            "it does not apply updates atomically, and the services' version checks rely on that. "
            "Stock FerretDB 1.x behaves so; use MongoDB, or the FerretDB that `make infra-up` builds "
            "(patched to apply each update atomically)."
        )


def service_database(client: MongoClient, settings: Settings) -> Database:
    """Return the database this service owns."""
    return client[settings.this.database]


def ping(client: MongoClient) -> None:
    """Round-trip to the server with authentication; raise a clear error when it fails."""
    try:
        client.admin.command("ping")
    except OperationFailure as err:
        if err.code == 18 or "auth" in str(err).lower():
            raise MongoAuthError(f"MongoDB refused the credentials: {err.details.get('errmsg', err)}") from err
        raise
    except ConnectionFailure as err:
        raise DatabaseUnavailable(f"MongoDB is unreachable: {err}") from err


def is_transient(err: BaseException) -> bool:
    """Tell an outage or contention (wait and retry) from a bug or bad data (give up).

    Domain errors can say they are worth waiting out with a class attribute ``transient = True``.
    """
    return isinstance(err, ConnectionFailure | DatabaseUnavailable) or getattr(err, "transient", False) is True


class MongoInbox:
    """Processed event ids of one consumer group, so a redelivered event is applied once."""

    def __init__(self, collection: Collection, group_id: str) -> None:
        self._events = collection
        self._group = group_id

    def seen(self, event_id: str) -> bool:
        return self._events.find_one({"_id": f"{self._group}:{event_id}"}, {"_id": 1}) is not None

    def prune(self, older_than: datetime) -> int:
        """Forget events handled before ``older_than``; return how many.

        FerretDB has no TTL indexes, so workers call this periodically. Redeliveries older than
        the retention are still caught by the handlers' own natural keys.
        """
        return self._events.delete_many(
            {"_id": {"$regex": f"^{re.escape(self._group)}:"}, "at": {"$lt": older_than}}
        ).deleted_count

    def mark(self, event_id: str) -> None:
        # Another member of the group may have got there first: the event is recorded either way.
        with contextlib.suppress(DuplicateKeyError):
            self._events.insert_one({"_id": f"{self._group}:{event_id}", "at": datetime.now(UTC)})
