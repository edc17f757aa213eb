"""MongoDB storage of orders and idempotency keys; the only place documents meet dataclasses."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from services.order.domain import (
    Cursor,
    Item,
    Order,
    OrderExists,
    StatusChange,
    Transition,
    predecessors,
)
from services.order.ports import IdempotencyRecord
from shared.events import TERMINAL_STATUSES, Envelope
from shared.outbox import BULK_CHUNK, OutboxRelay, outbox_document, outbox_fields

NEWEST_FIRST = [("created_at", DESCENDING), ("_id", DESCENDING)]
# The outbox is the relay's: reads leave it out.
WITHOUT_OUTBOX = {"outbox": 0}


class MongoOrderRepository:
    """Orders in ``orders`` (events in each document's outbox) and keys in ``idempotency_keys``."""

    def __init__(self, orders: Collection, keys: Collection, relay: OutboxRelay) -> None:
        self._orders = orders
        self._keys = keys
        self._relay = relay

    def ensure_indexes(self) -> None:
        """Create the listing indexes (FerretDB scans anyway; real MongoDB uses them)."""
        self._orders.create_index([("customer_id", ASCENDING), *NEWEST_FIRST])
        self._orders.create_index([("status", ASCENDING), *NEWEST_FIRST])
        self._orders.create_index(NEWEST_FIRST)
        self._keys.create_index([("created_at", ASCENDING)])

    def add(self, order: Order, events: list[Envelope]) -> None:
        try:
            self._orders.insert_one({**to_document(order), "outbox": outbox_document(events)})
        except DuplicateKeyError as err:
            raise OrderExists(order.order_id) from err
        self._relay.notify(self._orders, order.order_id, events)

    def get(self, order_id: str) -> Order | None:
        doc = self._orders.find_one({"_id": order_id}, WITHOUT_OUTBOX)
        return from_document(doc) if doc else None

    def list(self, *, customer_id: str | None, status: str | None, limit: int, after: Cursor | None) -> list[Order]:
        query: dict[str, Any] = {}
        if customer_id is not None:
            query["customer_id"] = customer_id
        if status is not None:
            query["status"] = status
        if after is not None:
            query["$or"] = [
                {"created_at": {"$lt": after.created_at}},
                {"created_at": after.created_at, "_id": {"$lt": after.order_id}},
            ]
        docs = self._orders.find(query, WITHOUT_OUTBOX).sort(NEWEST_FIRST).limit(limit)
        return [from_document(doc) for doc in docs]

    def advance(self, order_id: str, transition: Transition) -> bool:
        # The status condition makes the move atomic: concurrent or late events cannot undo it.
        result = self._orders.update_one(*_advance(order_id, transition))
        return result.modified_count == 1

    def advance_many(self, moves: Sequence[tuple[str, Transition]]) -> list[bool]:
        # One ordered bulk write of advance()'s conditional updates: each statement sees the ones
        # before it, so the outcome is that of one by one. (A read of the orders' statuses first
        # would be a full scan on FerretDB, which does not use the _id index for $in.)
        applied: list[bool] = []
        for start in range(0, len(moves), BULK_CHUNK):
            chunk = moves[start : start + BULK_CHUNK]
            result = self._orders.bulk_write([UpdateOne(*_advance(oid, t)) for oid, t in chunk], ordered=True)
            if result.modified_count == len(chunk):
                applied += [True] * len(chunk)
                continue
            # Some were stale: a bulk write does not say which, the orders' histories do.
            histories = {oid: self._history(oid) for oid in {oid for oid, _t in chunk}}
            applied += [(t.status, t.at) in histories[oid] for oid, t in chunk]
        return applied

    def _history(self, order_id: str) -> set[tuple[str, datetime]]:
        doc = self._orders.find_one({"_id": order_id}, {"status_history": 1})
        return {(c["status"], _utc(c["at"])) for c in (doc or {}).get("status_history", [])}

    def request_cancel(self, order_id: str, at: datetime, events: list[Envelope]) -> bool:
        result = self._orders.update_one(
            {
                "_id": order_id,
                "status": {"$nin": sorted(TERMINAL_STATUSES)},
                "cancel_requested_at": None,
            },
            {"$set": {"cancel_requested_at": at, "updated_at": at, **outbox_fields(events)}},
        )
        if result.modified_count != 1:
            return False
        self._relay.notify(self._orders, order_id, events)
        return True

    def claim_key(self, record: IdempotencyRecord) -> tuple[IdempotencyRecord, bool]:
        try:
            self._keys.insert_one(
                {
                    "_id": record.key,
                    "fingerprint": record.fingerprint,
                    "order_id": record.order_id,
                    "created_at": record.created_at,
                }
            )
            return record, True
        except DuplicateKeyError:
            doc = self._keys.find_one({"_id": record.key})
        if doc is None:
            # Purged between our insert attempt and the read: the key is free again.
            return self.claim_key(record)
        stored = IdempotencyRecord(doc["_id"], doc["fingerprint"], doc["order_id"], _utc(doc["created_at"]))
        return stored, False

    def purge_keys(self, older_than: datetime) -> int:
        return self._keys.delete_many({"created_at": {"$lt": older_than}}).deleted_count


def _advance(order_id: str, transition: Transition) -> tuple[dict[str, Any], dict[str, Any]]:
    """The filter and update of a status move; the status condition makes it atomic and forward-only."""
    return (
        {"_id": order_id, "status": {"$in": list(predecessors(transition.status))}},
        {
            "$set": {"status": transition.status, "updated_at": transition.at, **transition.fields()},
            "$push": {"status_history": {"status": transition.status, "at": transition.at}},
        },
    )


def to_document(order: Order) -> dict[str, Any]:
    return {
        "_id": order.order_id,
        "customer_id": order.customer_id,
        "customer_email": order.customer_email,
        "items": [{"product_id": i.product_id, "quantity": i.quantity, "price": i.price} for i in order.items],
        "total_amount": order.total_amount,
        "payment_method": order.payment_method,
        "payment_method_token": order.payment_method_token,
        "card_brand": order.card_brand,
        "card_last4": order.card_last4,
        "status": order.status,
        "failure_reason": order.failure_reason,
        "failure_detail": order.failure_detail,
        "payment_id": order.payment_id,
        "reservation_id": order.reservation_id,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "cancel_requested_at": order.cancel_requested_at,
        "status_history": [{"status": c.status, "at": c.at} for c in order.status_history],
    }


def from_document(doc: dict[str, Any]) -> Order:
    return Order(
        order_id=doc["_id"],
        customer_id=doc["customer_id"],
        items=tuple(Item(i["product_id"], int(i["quantity"]), float(i["price"])) for i in doc["items"]),
        total_amount=float(doc["total_amount"]),
        created_at=_utc(doc["created_at"]),
        updated_at=_utc(doc["updated_at"]),
        customer_email=doc.get("customer_email"),
        payment_method=doc.get("payment_method", "credit_card"),
        payment_method_token=doc.get("payment_method_token"),
        card_brand=doc.get("card_brand"),
        card_last4=doc.get("card_last4"),
        status=doc["status"],
        failure_reason=doc.get("failure_reason"),
        failure_detail=doc.get("failure_detail"),
        payment_id=doc.get("payment_id"),
        reservation_id=doc.get("reservation_id"),
        cancel_requested_at=_utc(doc["cancel_requested_at"]) if doc.get("cancel_requested_at") else None,
        status_history=tuple(StatusChange(c["status"], _utc(c["at"])) for c in doc.get("status_history", [])),
    )


def _utc(moment: datetime) -> datetime:
    # Clients built without tz_aware hand back naive datetimes; Mongo stores UTC either way.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
