"""MongoDB storage of orders and idempotency keys; the only place documents meet dataclasses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    StatusMoves,
    Transition,
    predecessors,
)
from services.order.ports import IdempotencyRecord
from shared.events import TERMINAL_STATUSES, Envelope
from shared.outbox import BULK_CHUNK, OutboxRelay, outbox_document, outbox_fields

NEWEST_FIRST = [("created_at", DESCENDING), ("_id", DESCENDING)]
# The outbox may still hold an OrderCreated event with the card number: never read it back.
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
        result = self._orders.update_one(
            {"_id": order_id, "status": {"$in": list(predecessors(transition.status))}},
            {
                "$set": {"status": transition.status, "updated_at": transition.at, **transition.fields()},
                "$push": {"status_history": {"status": transition.status, "at": transition.at}},
            },
        )
        return result.modified_count == 1

    def statuses(self, order_ids: Iterable[str]) -> dict[str, str]:
        ids = list(set(order_ids))
        return {doc["_id"]: doc["status"] for doc in self._orders.find({"_id": {"$in": ids}}, {"status": 1})}

    def advance_many(self, moves: Sequence[StatusMoves]) -> set[str]:
        written: set[str] = set()
        for start in range(0, len(moves), BULK_CHUNK):
            chunk = moves[start : start + BULK_CHUNK]
            requests = [UpdateOne({"_id": m.order_id, "status": m.start}, _moves_update(m)) for m in chunk]
            result = self._orders.bulk_write(requests, ordered=False)
            if result.modified_count == len(chunk):
                written.update(m.order_id for m in chunk)
                continue
            # Someone else moved some of them meanwhile: a bulk write does not say which, the
            # orders do (their status and time are then exactly what these moves wrote).
            found = self._orders.find({"_id": {"$in": [m.order_id for m in chunk]}}, {"status": 1, "updated_at": 1})
            now_at = {doc["_id"]: (doc["status"], _utc(doc["updated_at"])) for doc in found}
            last = {m.order_id: (m.transitions[-1].status, m.transitions[-1].at) for m in chunk}
            written.update(oid for oid, state in now_at.items() if last[oid] == state)
        return written

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


def _moves_update(moves: StatusMoves) -> dict[str, Any]:
    """The one update that makes all of an order's moves, as advance() would one by one."""
    fields: dict[str, Any] = {}
    for transition in moves.transitions:
        fields.update(transition.fields())
    last = moves.transitions[-1]
    history = [{"status": t.status, "at": t.at} for t in moves.transitions]
    return {
        "$set": {"status": last.status, "updated_at": last.at, **fields},
        "$push": {"status_history": {"$each": history}},
    }


def to_document(order: Order) -> dict[str, Any]:
    return {
        "_id": order.order_id,
        "customer_id": order.customer_id,
        "customer_email": order.customer_email,
        "items": [{"product_id": i.product_id, "quantity": i.quantity, "price": i.price} for i in order.items],
        "total_amount": order.total_amount,
        "payment_method": order.payment_method,
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
