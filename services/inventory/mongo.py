"""MongoDB adapters: the only place stock and reservation documents are mapped to dataclasses.

Every write is a single-document update whose filter carries its precondition, so a repeated
step changes nothing (no transactions are needed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DeleteOne, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.inventory.domain import Line, Reservation, Shortage, StockItem, price_bounds
from services.inventory.ports import Hold, HoldEnd
from shared.events import Envelope
from shared.mongo import duplicate_key_indexes, insert_new
from shared.outbox import BULK_CHUNK, OutboxRelay, outbox_document, outbox_fields


class MongoStockRepository:
    def __init__(self, collection: Collection) -> None:
        self._stock = collection

    def get(self, product_id: str) -> StockItem | None:
        doc = self._stock.find_one({"_id": product_id})
        return _to_item(doc) if doc else None

    def list(self) -> list[StockItem]:
        # The holds are left out: they can be many and the listing does not show them.
        return [_to_item(doc) for doc in self._stock.find({}, {"holds": 0}).sort("_id", ASCENDING)]

    def is_empty(self) -> bool:
        return self._stock.find_one({}, {"_id": 1}) is None

    def add(self, item: StockItem) -> bool:
        doc = {
            "_id": item.product_id,
            "name": item.name,
            "price": item.price,
            "available": item.available,
            "reserved": item.reserved,
            "sold": item.sold,
            "holds": dict(item.holds),
            "updated_at": item.updated_at,
        }
        try:
            self._stock.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    def update(
        self, product_id: str, *, name: str | None, price: float | None, restock: int, now: datetime
    ) -> StockItem | None:
        fields: dict[str, Any] = {"updated_at": now}
        if name is not None:
            fields["name"] = name
        if price is not None:
            fields["price"] = price
        doc = self._stock.find_one_and_update(
            {"_id": product_id},
            {"$set": fields, "$inc": {"available": restock}},
            return_document=ReturnDocument.AFTER,
        )
        return _to_item(doc) if doc else None

    def hold(
        self, product_id: str, reservation_id: str, quantity: int, now: datetime, price: float | None = None
    ) -> bool:
        return self.hold_all(product_id, [Hold(reservation_id, quantity, price)], now)

    def release_hold(self, product_id: str, reservation_id: str, quantity: int, now: datetime) -> bool:
        return self.end_all(product_id, [HoldEnd(reservation_id, quantity, committed=False)], now)

    def commit_hold(self, product_id: str, reservation_id: str, quantity: int, now: datetime) -> bool:
        return self.end_all(product_id, [HoldEnd(reservation_id, quantity, committed=True)], now)

    def hold_all(self, product_id: str, holds: Sequence[Hold], now: datetime) -> bool:
        if not holds:
            return True
        total = sum(hold.quantity for hold in holds)
        condition: dict[str, Any] = {"_id": product_id, "available": {"$gte": total}}
        condition.update({f"holds.{hold.reservation_id}": {"$exists": False} for hold in holds})
        bounds = [price_bounds(hold.price) for hold in holds if hold.price is not None]
        if bounds:
            low, high = max(low for low, _ in bounds), min(high for _, high in bounds)
            if low > high:
                return False  # two holds name different prices: at most one of them can match
            condition["price"] = {"$gte": low, "$lte": high}
        fields = {f"holds.{hold.reservation_id}": hold.quantity for hold in holds}
        result = self._stock.update_one(
            condition,
            {"$inc": {"available": -total, "reserved": total}, "$set": {**fields, "updated_at": now}},
        )
        return result.modified_count == 1

    def end_all(self, product_id: str, ends: Sequence[HoldEnd], now: datetime) -> bool:
        if not ends:
            return True
        sold = sum(end.quantity for end in ends if end.committed)
        returned = sum(end.quantity for end in ends if not end.committed)
        condition: dict[str, Any] = {"_id": product_id}
        condition.update({f"holds.{end.reservation_id}": {"$exists": True} for end in ends})
        update = {
            "$inc": {"available": returned, "reserved": -(sold + returned), "sold": sold},
            "$unset": {f"holds.{end.reservation_id}": "" for end in ends},
            "$set": {"updated_at": now},
        }
        result = self._stock.update_one(condition, update)
        return result.modified_count == 1


class MongoReservationRepository:
    def __init__(self, collection: Collection, timers: Collection, relay: OutboxRelay | None = None) -> None:
        self._docs = collection
        self._timers = timers
        self._relay = relay

    def ensure_indexes(self) -> None:
        """Index the timers by due time (the reservations are only ever read by id)."""
        self._timers.create_index([("expires_at", ASCENDING)])

    def add(self, reservation: Reservation, events: Iterable[Envelope] = ()) -> bool:
        events = list(events)
        doc = _to_doc(reservation)
        doc["outbox"] = outbox_document(events)
        doc["replied"] = {event.event_id: event.event_type for event in events}
        try:
            self._docs.insert_one(doc)
        except DuplicateKeyError:
            return False
        self._notify(reservation.reservation_id, events)
        return True

    def get(self, reservation_id: str) -> Reservation | None:
        doc = self._docs.find_one({"_id": reservation_id}, {"outbox": 0, "replied": 0})
        return _to_reservation(doc) if doc else None

    def transition(
        self,
        reservation_id: str,
        from_statuses: Sequence[str],
        status: str,
        *,
        now: datetime,
        order_id: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
        shortages: Sequence[Shortage] = (),
        events: Iterable[Envelope] = (),
    ) -> Reservation | None:
        events = list(events)
        fields: dict[str, Any] = {"status": status, "updated_at": now, **_event_fields(events)}
        if reason is not None:
            fields["reason"] = reason
        if detail is not None:
            fields["detail"] = detail
        if shortages:
            fields["details"] = [s.to_dict() for s in shortages]
        condition: dict[str, Any] = {"_id": reservation_id, "status": {"$in": list(from_statuses)}}
        if order_id is not None:
            condition["order_id"] = order_id
        # One round trip that also returns the document, so no caller reads it back. (FerretDB 1.x
        # cannot project in findAndModify, so the outbox comes along; it is small and soon cleared.)
        doc = self._docs.find_one_and_update(condition, {"$set": fields}, return_document=ReturnDocument.AFTER)
        if doc is None:
            return None
        self._notify(reservation_id, events)
        return _to_reservation(doc)

    def add_reply(self, reservation_id: str, event: Envelope) -> bool:
        result = self._docs.update_one(
            {"_id": reservation_id, f"replied.{event.event_id}": {"$exists": False}},
            {"$set": _event_fields([event])},
        )
        added = result.matched_count == 1
        if added:
            self._notify(reservation_id, [event])
        return added

    def add_timer(self, reservation_id: str, expires_at: datetime) -> None:
        # A concurrent attempt of the same reservation may create the same timer first.
        with contextlib.suppress(DuplicateKeyError):
            self._timers.update_one({"_id": reservation_id}, {"$set": {"expires_at": expires_at}}, upsert=True)

    def remove_timer(self, reservation_id: str) -> None:
        self._timers.delete_one({"_id": reservation_id})

    def add_all(self, reservations: Sequence[Reservation]) -> list[bool]:
        if not reservations:
            return []
        docs = [{**_to_doc(reservation), "outbox": {}, "replied": {}} for reservation in reservations]
        return insert_new(self._docs, docs, BULK_CHUNK)

    def add_timers(self, timers: Sequence[tuple[str, datetime]]) -> None:
        if timers:
            upserts = [UpdateOne({"_id": rid}, {"$set": {"expires_at": at}}, upsert=True) for rid, at in timers]
            try:
                self._timers.bulk_write(upserts, ordered=False)
            except BulkWriteError as err:
                duplicate_key_indexes(err)  # a concurrent attempt created the same timer first, as in add_timer

    def remove_timers(self, reservation_ids: Sequence[str]) -> None:
        # One delete per id: FerretDB reads the whole collection for an $in on _id.
        if reservation_ids:
            self._timers.bulk_write([DeleteOne({"_id": rid}) for rid in reservation_ids], ordered=False)

    def due_timers(self, now: datetime, limit: int) -> list[str]:
        cursor = self._timers.find({"expires_at": {"$lte": now}}, {"_id": 1}).sort("expires_at", ASCENDING)
        return [doc["_id"] for doc in cursor.limit(limit)]

    def _notify(self, reservation_id: str, events: list[Envelope]) -> None:
        if events and self._relay is not None:
            self._relay.notify(self._docs, reservation_id, events)


def _event_fields(events: list[Envelope]) -> dict[str, Any]:
    """``$set`` fields adding the events to the outbox and remembering their ids for good."""
    return {**outbox_fields(events), **{f"replied.{event.event_id}": event.event_type for event in events}}


def _to_item(doc: dict[str, Any]) -> StockItem:
    return StockItem(
        product_id=doc["_id"],
        name=doc["name"],
        price=float(doc["price"]),
        available=int(doc["available"]),
        reserved=int(doc["reserved"]),
        sold=int(doc["sold"]),
        holds={rid: int(q) for rid, q in (doc.get("holds") or {}).items()},
        updated_at=_aware(doc.get("updated_at")),
    )


def _to_doc(reservation: Reservation) -> dict[str, Any]:
    return {
        "_id": reservation.reservation_id,
        "order_id": reservation.order_id,
        "items": [line.to_dict() for line in reservation.items],
        "status": reservation.status,
        "reason": reservation.reason,
        "detail": reservation.detail,
        "details": [s.to_dict() for s in reservation.shortages],
        "origin": reservation.origin,
        "correlation_id": reservation.correlation_id,
        "customer_id": reservation.customer_id,
        "created_at": reservation.created_at,
        "expires_at": reservation.expires_at,
        "updated_at": reservation.updated_at,
    }


def _to_reservation(doc: dict[str, Any]) -> Reservation:
    return Reservation(
        reservation_id=doc["_id"],
        order_id=doc["order_id"],
        items=[Line(item["product_id"], int(item["quantity"])) for item in doc.get("items") or []],
        status=doc["status"],
        created_at=_aware(doc["created_at"]),
        expires_at=_aware(doc["expires_at"]),
        updated_at=_aware(doc["updated_at"]),
        reason=doc.get("reason"),
        detail=doc.get("detail"),
        shortages=[Shortage(s["product_id"], s["requested"], s["available"]) for s in doc.get("details") or []],
        origin=doc.get("origin", "api"),
        correlation_id=doc.get("correlation_id"),
        customer_id=doc.get("customer_id"),
    )


def _aware(moment: Any) -> Any:
    # Clients built without tz_aware return naive UTC datetimes.
    if isinstance(moment, datetime) and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
