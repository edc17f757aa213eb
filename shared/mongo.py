"""MongoDB access shared by every service: the client factory, outage detection and the inbox."""

from __future__ import annotations

import contextlib
import re
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
