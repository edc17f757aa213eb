"""Mongo repositories of monitoring: the only place its documents are mapped to and from dataclasses.

FerretDB scans on anything but ``_id`` (an ``$in`` of ids included), so hot paths go by ``_id``
and scans only touch small, trimmed collections (recent_events, minutes, open_orders, dlq).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, DeleteOne, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.monitoring.deadletters import DeadLetter
from services.monitoring.domain import (
    TERMINAL_EVENTS,
    OpenOrder,
    ServiceHealth,
    Timeline,
    TimelineEvent,
    make_timeline,
)
from services.monitoring.stats import Totals

TOTALS_ID = "totals"

DUPLICATE_KEY = 11000


def _recent_doc(order_id: str, event: TimelineEvent) -> dict[str, Any]:
    doc = {k: v for k, v in _event_doc(event).items() if k not in ("event_id", "received_at", "detail")}
    return {"_id": event.event_id, "order_id": order_id, **doc}


def _event_doc(event: TimelineEvent) -> dict[str, Any]:
    doc = {
        "event_id": event.event_id,
        "topic": event.topic,
        "event_type": event.event_type,
        "timestamp": event.timestamp,
        "source": event.source,
        "received_at": event.received_at,
    }
    if event.detail is not None:
        doc["detail"] = event.detail
    return doc


def _event(doc: Mapping[str, Any]) -> TimelineEvent:
    return TimelineEvent(
        event_id=doc["event_id"],
        topic=doc["topic"],
        event_type=doc["event_type"],
        timestamp=doc["timestamp"],
        source=doc["source"],
        received_at=doc.get("received_at") or doc["timestamp"],
        detail=doc.get("detail"),
    )


def _timeline(doc: Mapping[str, Any]) -> Timeline:
    return make_timeline(
        doc["_id"],
        doc.get("customer_id"),
        (_event(e) for e in doc.get("events") or []),
    )


class MongoTimelineRepository:
    """One document per order in ``timelines`` (keyed by order id), plus the small ``open_orders``.

    Events are written in bulk where the caller needs no answer but "was it new", so a batch
    of a hundred events costs one round trip instead of a hundred.
    """

    def __init__(self, timelines: Collection, open_orders: Collection, *, limit: int = 500) -> None:
        self._timelines = timelines
        self._open = open_orders
        self._limit = limit

    def ensure_indexes(self) -> None:
        self._open.create_index([("created_at", ASCENDING)])

    def append(self, order_id: str, customer_id: str | None, event: TimelineEvent) -> Timeline | None:
        query, update = self._append(order_id, customer_id, event)
        try:
            doc = self._timelines.find_one_and_update(query, update, upsert=True, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            # Either the event is already there, or another consumer created the document
            # between our filter and our insert: try once more without inserting.
            doc = self._timelines.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
        return _timeline(doc) if doc else None

    def append_many(self, entries: Sequence[tuple[str, str | None, TimelineEvent]]) -> list[bool]:
        if not entries:
            return []
        writes = [self._append(*entry) for entry in entries]
        try:
            self._timelines.bulk_write([UpdateOne(q, u, upsert=True) for q, u in writes], ordered=False)
            return [True] * len(entries)
        except BulkWriteError as err:
            failed = {e["index"] for e in err.details.get("writeErrors", []) if e.get("code") == DUPLICATE_KEY}
            if len(failed) < len(err.details.get("writeErrors", [])):
                raise
        # A duplicate key is a redelivered event, a full timeline, or a document another
        # consumer created first: the same update without the insert tells them apart.
        return [
            i not in failed or self._timelines.update_one(*writes[i]).modified_count == 1 for i in range(len(writes))
        ]

    def _append(
        self, order_id: str, customer_id: str | None, event: TimelineEvent
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The filter and update adding ``event`` to the order's timeline, only if it is new there.

        The filter matches only when the event is new and the timeline has room, so a redelivered
        event changes nothing: on an existing document the upsert then tries to insert a second
        document with the same _id and fails with DuplicateKeyError. Seen events are keys of a
        map, not ``events.event_id: {$ne: ...}``: FerretDB 1.24 matches that $ne when ANY element
        differs, so duplicates got through once a timeline had two events.
        """
        seen = f"seen.{_seen_key(event.event_id)}"
        query = {"_id": order_id, seen: {"$exists": False}, "event_count": {"$lt": self._limit}}
        fields: dict[str, Any] = {seen: True}
        if customer_id:
            fields["customer_id"] = customer_id
        if event.event_type in TERMINAL_EVENTS:
            fields["status"] = TERMINAL_EVENTS[event.event_type]
            fields["failure_reason"] = event.detail if event.event_type == "OrderFailed" else None
        update = {
            "$push": {"events": _event_doc(event)},
            "$inc": {"event_count": 1},
            "$min": {"first_at": event.timestamp},
            "$max": {"last_at": event.timestamp},
            "$set": fields,
        }
        return query, update

    def get(self, order_id: str) -> Timeline | None:
        doc = self._timelines.find_one({"_id": order_id})
        return _timeline(doc) if doc else None

    def track(self, opened: Mapping[str, datetime], closed: Iterable[str]) -> None:
        closed = set(closed)
        requests: list[UpdateOne | DeleteOne] = [
            UpdateOne({"_id": order_id}, {"$set": {"created_at": created_at}}, upsert=True)
            for order_id, created_at in opened.items()
            if order_id not in closed
        ]
        requests += [DeleteOne({"_id": order_id}) for order_id in sorted(closed)]
        if requests:
            self._open.bulk_write(requests, ordered=False)

    def open_before(self, moment: datetime, limit: int) -> list[OpenOrder]:
        docs = self._open.find({"created_at": {"$lt": moment}}).sort("created_at", ASCENDING).limit(limit)
        return [OpenOrder(doc["_id"], doc["created_at"]) for doc in docs]

    def due_for_check(self, moment: datetime, now: datetime, limit: int) -> list[OpenOrder]:
        not_postponed = {"$or": [{"check_at": {"$exists": False}}, {"check_at": {"$lte": now}}]}
        query = {"created_at": {"$lt": moment}, **not_postponed}
        docs = self._open.find(query).sort("created_at", ASCENDING).limit(limit)
        return [OpenOrder(doc["_id"], doc["created_at"]) for doc in docs]

    def check_later(self, order_ids: Iterable[str], at: datetime) -> None:
        ids = sorted(set(order_ids))
        if ids:
            # Never upserts: an order closed meanwhile stays closed.
            self._open.bulk_write([UpdateOne({"_id": i}, {"$set": {"check_at": at}}) for i in ids], ordered=False)


class MongoRecentEventRepository:
    """The feed behind GET /events: one small document per event, trimmed to the newest N."""

    def __init__(self, collection: Collection) -> None:
        self._events = collection

    def ensure_indexes(self) -> None:
        self._events.create_index([("timestamp", DESCENDING)])

    def add(self, order_id: str, event: TimelineEvent) -> None:
        self.add_many([(order_id, event)])

    def add_many(self, items: Sequence[tuple[str, TimelineEvent]]) -> None:
        docs = {event.event_id: _recent_doc(order_id, event) for order_id, event in items}
        if not docs:
            return
        # Unordered: every new event is inserted; redelivered ones fail on the unique _id alone.
        try:
            self._events.insert_many(list(docs.values()), ordered=False)
        except BulkWriteError as err:
            others = [e for e in err.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
            if others:
                raise

    def newest(self, limit: int, event_type: str | None = None) -> list[tuple[str, TimelineEvent]]:
        query = {"event_type": event_type} if event_type else {}
        docs = self._events.find(query).sort("timestamp", DESCENDING).limit(limit)
        return [(doc["order_id"], _event({**doc, "event_id": doc["_id"]})) for doc in docs]

    def trim(self, keep: int) -> int:
        cutoff = list(self._events.find({}, {"timestamp": 1}).sort("timestamp", DESCENDING).skip(keep).limit(1))
        if not cutoff:
            return 0
        # Everything at or below the (keep+1)-th newest timestamp goes; ties may take a few more.
        return self._events.delete_many({"timestamp": {"$lte": cutoff[0]["timestamp"]}}).deleted_count


class MongoStatsRepository:
    """One totals document updated with $inc (shared by every process), and per-minute buckets."""

    def __init__(self, stats: Collection, minutes: Collection) -> None:
        self._stats = stats
        self._minutes = minutes

    def increment(self, counters: Mapping[str, float]) -> None:
        if counters:  # nothing to add: no round trip (and an empty $inc is an error)
            self._stats.update_one({"_id": TOTALS_ID}, {"$inc": dict(counters)}, upsert=True)

    def increment_minute(self, minute: str, counters: Mapping[str, int]) -> None:
        self._minutes.update_one({"_id": minute}, {"$inc": dict(counters)}, upsert=True)

    def set(self, values: Mapping[str, int]) -> None:
        self._stats.update_one({"_id": TOTALS_ID}, {"$set": dict(values)}, upsert=True)

    def totals(self) -> Totals:
        doc = self._stats.find_one({"_id": TOTALS_ID}) or {}
        return Totals.from_counters(doc)

    def minutes(self, since: str) -> dict[str, dict[str, int]]:
        docs = self._minutes.find({"_id": {"$gte": since}})
        return {doc["_id"]: {k: v for k, v in doc.items() if k != "_id"} for doc in docs}

    def trim_minutes(self, before: str) -> int:
        return self._minutes.delete_many({"_id": {"$lt": before}}).deleted_count


def _letter_doc(letter: DeadLetter) -> dict[str, Any]:
    doc = dict(letter.__dict__)
    doc["_id"] = doc.pop("id")
    return doc


def _letter(doc: Mapping[str, Any]) -> DeadLetter:
    fields = {name: doc.get(name) for name in DeadLetter.__dataclass_fields__ if name != "id"}
    fields["replayed_count"] = fields["replayed_count"] or 0
    return DeadLetter(id=doc["_id"], **fields)


class MongoDeadLetterRepository:
    """Dead letters keyed by their position on the dead-letter topic, so redelivery stores one."""

    def __init__(self, collection: Collection) -> None:
        self._letters = collection

    def ensure_indexes(self) -> None:
        self._letters.create_index([("received_at", DESCENDING)])

    def add(self, letter: DeadLetter) -> bool:
        try:
            self._letters.insert_one(_letter_doc(letter))
        except DuplicateKeyError:
            return False
        return True

    def get(self, letter_id: str) -> DeadLetter | None:
        doc = self._letters.find_one({"_id": letter_id})
        return _letter(doc) if doc else None

    def newest(self, limit: int) -> list[DeadLetter]:
        return [_letter(doc) for doc in self._letters.find().sort("received_at", DESCENDING).limit(limit)]

    def mark_replayed(self, letter_id: str, at: datetime) -> DeadLetter | None:
        doc = self._letters.find_one_and_update(
            {"_id": letter_id},
            {"$inc": {"replayed_count": 1}, "$set": {"last_replayed_at": at}},
            return_document=ReturnDocument.AFTER,
        )
        return _letter(doc) if doc else None


class MongoHealthRepository:
    """The latest health poll outcome per service, keyed by service name."""

    def __init__(self, collection: Collection) -> None:
        self._health = collection

    def save(self, health: ServiceHealth) -> None:
        doc = dict(health.__dict__)
        doc.pop("service")
        self._health.replace_one({"_id": health.service}, doc, upsert=True)

    def all(self) -> list[ServiceHealth]:
        docs = self._health.find().sort("_id", ASCENDING)
        names = [name for name in ServiceHealth.__dataclass_fields__ if name != "service"]
        return [ServiceHealth(service=doc["_id"], **{name: doc[name] for name in names if name in doc}) for doc in docs]


def _seen_key(event_id: str) -> str:
    """A field name for an event id, which may hold dots or a leading $ (it is outside input)."""
    return hashlib.sha1(event_id.encode()).hexdigest()[:20]
