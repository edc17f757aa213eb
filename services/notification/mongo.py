"""MongoDB storage of notifications; the only place documents meet dataclasses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from services.notification.domain import SENT, DuplicateNotification, Notification
from shared.events import Envelope
from shared.mongo import insert_new
from shared.outbox import BULK_CHUNK, ConditionalUpdate, OutboxRelay, bulk_update, outbox_document, outbox_fields

_FIELDS = tuple(Notification.__dataclass_fields__)


class MongoNotificationRepository:
    def __init__(self, notifications: Collection, relay: OutboxRelay | None = None) -> None:
        self._notifications = notifications
        self._relay = relay

    def ensure_indexes(self) -> None:
        """Create the index behind the per-customer listing."""
        self._notifications.create_index([("customer_id", ASCENDING), ("created_at", DESCENDING)])

    def add(self, notification: Notification) -> None:
        try:
            self._notifications.insert_one(_new_document(notification))
        except DuplicateKeyError as err:
            raise DuplicateNotification(f"notification {notification.notification_id} already exists") from err

    def add_all(self, notifications: Sequence[Notification]) -> list[bool]:
        return insert_new(self._notifications, [_new_document(n) for n in notifications], BULK_CHUNK)

    def get(self, notification_id: str) -> Notification | None:
        doc = self._notifications.find_one({"_id": notification_id}, {"outbox": 0})
        return _from_document(doc) if doc else None

    def update(self, notification: Notification, *, events: Iterable[Envelope] = ()) -> bool:
        events = tuple(events)
        result = self._notifications.update_one(*_unless_sent(notification, events))
        if result.matched_count:
            self._notify(notification, events)
        return result.matched_count == 1

    def update_all(self, updates: Sequence[tuple[Notification, tuple[Envelope, ...]]]) -> list[bool]:
        writes = [ConditionalUpdate(n.notification_id, *_unless_sent(n, e), e) for n, e in updates]
        return bulk_update(self._notifications, writes, self._relay)

    def _notify(self, notification: Notification, events: tuple[Envelope, ...]) -> None:
        if events and self._relay:
            self._relay.notify(self._notifications, notification.notification_id, list(events))

    def list_by_customer(self, customer_id: str, limit: int) -> list[Notification]:
        cursor = (
            self._notifications.find({"customer_id": customer_id}, {"outbox": 0})
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        return [_from_document(doc) for doc in cursor]


def _new_document(notification: Notification) -> dict[str, Any]:
    return {**_to_document(notification), "outbox": outbox_document(())}


def _unless_sent(notification: Notification, events: tuple[Envelope, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    fields = _to_document(notification)
    del fields["_id"]
    return (
        {"_id": notification.notification_id, "status": {"$ne": SENT}},
        {"$set": {**fields, **outbox_fields(events)}},
    )


def _to_document(notification: Notification) -> dict[str, Any]:
    doc = asdict(notification)
    doc["_id"] = doc.pop("notification_id")
    return doc


def _from_document(doc: dict[str, Any]) -> Notification:
    values = {name: doc.get(name) for name in _FIELDS if name != "notification_id"}
    for name in ("created_at", "sent_at"):
        # Clients that are not tz-aware hand back naive UTC datetimes.
        if values[name] is not None and values[name].tzinfo is None:
            values[name] = values[name].replace(tzinfo=UTC)
    values["attempts"] = values["attempts"] or 0
    return Notification(notification_id=doc["_id"], **values)
