"""MongoDB storage of sagas and their timers; the only place saga documents are mapped."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.orchestrator.domain import WITHDRAWN_CARD, LineItem, OrderSnapshot, Step
from services.orchestrator.ports import SagaWrite, Timer
from services.orchestrator.saga import SagaState
from shared.events import Envelope
from shared.mongo import duplicate_key_indexes
from shared.outbox import BULK_CHUNK, OutboxRelay, outbox_document, outbox_fields, outbox_holds
from shared.write_behind import WriteBehind

NO_OUTBOX = {"outbox": 0}


class MongoSagaRepository:
    """Sagas in ``sagas`` (one document per order, with its outbox) and timers in ``saga_timers``."""

    def __init__(
        self,
        sagas: Collection,
        timers: Collection,
        relay: OutboxRelay | None = None,
        *,
        cache_size: int = 0,
        timer_writes: WriteBehind | None = None,
    ) -> None:
        self._sagas = sagas
        self._timers = timers
        # The worker's timer writes wait up to a tenth of a second and go out in bulk (three per
        # order otherwise); reconcile_timers restores any a crash loses.
        self._timer_writes = timer_writes
        self._relay = relay
        # The worker remembers the sagas it wrote last, so the next event of an order skips the
        # read. A copy another process changed meanwhile fails the version check of the next
        # update, is forgotten, and the write is decided again on a fresh read.
        self._cache: OrderedDict[str, SagaState] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def ensure_indexes(self) -> None:
        """Create the indexes of the listing and of the timer scan (idempotent)."""
        self._sagas.create_index([("created_at", DESCENDING)])
        self._timers.create_index([("due_at", ASCENDING)])

    def get(self, order_id: str, *, fresh: bool = False) -> SagaState | None:
        with self._cache_lock:
            cached = None if fresh else self._cache.get(order_id)
        if cached is not None:
            return cached
        doc = self._sagas.find_one({"_id": order_id}, NO_OUTBOX)
        saga = to_saga(doc) if doc else None
        if fresh:
            self._forget(order_id)  # the cached copy may be outdated; the next write refills it
        return saga

    def create(self, saga: SagaState, events: Iterable[Envelope]) -> bool:
        events = list(events)
        try:
            self._sagas.insert_one(_new_document(saga, events))
        except DuplicateKeyError:
            return False
        self._landed(saga, events)
        return True

    def update(self, saga: SagaState, events: Iterable[Envelope]) -> bool:
        events = list(events)
        result = self._sagas.update_one(*_versioned_update(saga, events))
        if result.modified_count == 0:
            self._forget(saga.order_id)
            return False
        self._landed(saga, events)
        return True

    def write_many(self, writes: Sequence[SagaWrite]) -> list[bool]:
        # Each chunk's writes are handed on as soon as it lands. A chunk that fails midway (an
        # outage) may have written some of its sagas: the relay is told to read their outboxes, so
        # their events do not wait for the recovery scan while the retry finds them handled.
        landed: list[bool] = []
        for start in range(0, len(writes), BULK_CHUNK):
            chunk = writes[start : start + BULK_CHUNK]
            try:
                landed += self._write_chunk(chunk)
            except Exception:
                for write in chunk:
                    self._forget(write.saga.order_id)
                    if self._relay:
                        self._relay.notify(self._sagas, write.saga.order_id)
                raise
        return landed

    def _write_chunk(self, writes: Sequence[SagaWrite]) -> list[bool]:
        landed = dict.fromkeys(range(len(writes)), True)
        creates = [n for n, write in enumerate(writes) if write.new]
        updates = [n for n, write in enumerate(writes) if not write.new]
        if creates:
            docs = [_new_document(writes[n].saga, writes[n].events) for n in creates]
            try:
                self._sagas.insert_many(docs, ordered=False)
            except BulkWriteError as err:
                for index in duplicate_key_indexes(err):
                    landed[creates[index]] = False
        if updates:
            requests = [UpdateOne(*_versioned_update(writes[n].saga, writes[n].events)) for n in updates]
            result = self._sagas.bulk_write(requests, ordered=False)
            if result.modified_count < len(updates):
                # Some were stale, and a bulk write does not say which. A write that landed left
                # its events in the saga's outbox (only the relay, told below, clears them).
                for n in updates:
                    landed[n] = outbox_holds(self._sagas, writes[n].saga.order_id, writes[n].events)
                    if not landed[n]:
                        self._forget(writes[n].saga.order_id)
        for n, write in enumerate(writes):
            if landed[n]:
                self._landed(write.saga, list(write.events))
        return [landed[n] for n in range(len(writes))]

    def _landed(self, saga: SagaState, events: list[Envelope]) -> None:
        self._remember(replace(saga, version=saga.version + 1))
        self._notify(saga.order_id, events)

    def _remember(self, saga: SagaState) -> None:
        if not self._cache_size:
            return
        with self._cache_lock:
            self._cache[saga.order_id] = saga
            self._cache.move_to_end(saga.order_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _forget(self, order_id: str) -> None:
        with self._cache_lock:
            self._cache.pop(order_id, None)

    def recent(self, state: str | None, limit: int) -> list[SagaState]:
        query = {"state": state} if state else {}
        cursor = self._sagas.find(query, NO_OUTBOX).sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        return [to_saga(doc) for doc in cursor.limit(limit)]

    def set_timer(self, timer: Timer) -> None:
        fields = {"due_at": timer.due_at, "kind": timer.kind}
        if self._timer_writes:
            self._timer_writes.set(timer.order_id, fields)
        else:
            self._timers.update_one({"_id": timer.order_id}, {"$set": fields}, upsert=True)

    def clear_timer(self, order_id: str) -> None:
        if self._timer_writes:
            self._timer_writes.delete(order_id)
        else:
            self._timers.delete_one({"_id": order_id})

    def due_timers(self, now: datetime, limit: int) -> list[Timer]:
        self._flush_timers()
        cursor = self._timers.find({"due_at": {"$lte": now}}).sort("due_at", ASCENDING).limit(limit)
        return [Timer(doc["_id"], doc["due_at"], doc["kind"]) for doc in cursor]

    def timed_count(self) -> int:
        # Only the timers of sagas in flight exist, so this reads a small collection.
        self._flush_timers()
        return self._timers.count_documents({})

    def untimed_active(self, states: Iterable[str]) -> list[SagaState]:
        self._flush_timers()
        timed = {doc["_id"] for doc in self._timers.find({}, {"_id": 1})}
        cursor = self._sagas.find({"state": {"$in": list(states)}}, NO_OUTBOX)
        return [to_saga(doc) for doc in cursor if doc["_id"] not in timed]

    def scrub_card_numbers(self) -> int:
        # The version moves on, so a copy another worker cached before the scrub is read again.
        result = self._sagas.update_many(
            {"order.card_details": {"$ne": None}},
            {
                "$unset": {"order.card_details": ""},
                "$set": {"order.payment_method_token": WITHDRAWN_CARD},
                "$inc": {"version": 1},
            },
        )
        with self._cache_lock:
            self._cache.clear()
        return result.modified_count

    def _flush_timers(self) -> None:
        """Write this process's waiting timer changes first, so reads of the timers see them."""
        if self._timer_writes:
            self._timer_writes.flush()

    def _notify(self, order_id: str, events: list[Envelope]) -> None:
        if self._relay and events:
            self._relay.notify(self._sagas, order_id, events)


def _new_document(saga: SagaState, events: list[Envelope] | tuple[Envelope, ...]) -> dict[str, Any]:
    return {**to_document(saga), "version": 1, "outbox": outbox_document(events)}


def _versioned_update(saga: SagaState, events: Iterable[Envelope]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The filter and update that replace the saga if it is still at ``saga.version``."""
    fields = to_document(saga)
    for fixed in ("_id", "version", "created_at"):
        fields.pop(fixed)
    return (
        {"_id": saga.order_id, "version": saga.version},
        {"$set": {**fields, **outbox_fields(events)}, "$inc": {"version": 1}},
    )


def to_document(saga: SagaState) -> dict[str, Any]:
    """Map a saga to its document (without the outbox)."""
    return {
        "_id": saga.order_id,
        "state": saga.state,
        "order": _order_document(saga.order),
        "reservation_id": saga.reservation_id,
        "payment_id": saga.payment_id,
        "failure_reason": saga.failure_reason,
        "failure_detail": saga.failure_detail,
        "refund_requested": saga.refund_requested,
        "steps": [_step_document(step) for step in saga.steps],
        "handled_events": list(saga.handled_events),
        "attempts": dict(saga.attempts),
        "version": saga.version,
        "created_at": saga.created_at,
        "updated_at": saga.updated_at,
        "payment_deadline": saga.payment_deadline,
        "order_deadline": saga.order_deadline,
    }


def to_saga(doc: dict[str, Any]) -> SagaState:
    """Map a saga document back to the saga."""
    return SagaState(
        order_id=doc["_id"],
        state=doc["state"],
        order=_order(doc.get("order")),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        reservation_id=doc.get("reservation_id"),
        payment_id=doc.get("payment_id"),
        failure_reason=doc.get("failure_reason"),
        failure_detail=doc.get("failure_detail"),
        refund_requested=bool(doc.get("refund_requested")),
        steps=tuple(
            Step(s["step"], s["status"], s["at"], s.get("event_id"), s.get("detail")) for s in doc.get("steps", [])
        ),
        handled_events=tuple(doc.get("handled_events", [])),
        attempts=dict(doc.get("attempts") or {}),
        version=doc["version"],
        payment_deadline=doc.get("payment_deadline"),
        order_deadline=doc.get("order_deadline"),
    )


def _order_document(order: OrderSnapshot | None) -> dict[str, Any] | None:
    if order is None:
        return None
    return {
        "customer_id": order.customer_id,
        "customer_email": order.customer_email,
        "items": order.item_dicts(),
        "total_amount": order.total_amount,
        "payment_method": order.payment_method,
        "payment_method_token": order.payment_method_token,
        "card_brand": order.card_brand,
        "card_last4": order.card_last4,
    }


def _order(doc: dict[str, Any] | None) -> OrderSnapshot | None:
    if doc is None:
        return None
    return OrderSnapshot(
        customer_id=doc["customer_id"],
        customer_email=doc.get("customer_email"),
        items=tuple(LineItem(i["product_id"], i["quantity"], i["price"]) for i in doc.get("items", [])),
        total_amount=doc["total_amount"],
        payment_method=doc["payment_method"],
        # A card number an earlier version kept in clear (not yet scrubbed) is never read: its saga
        # cannot charge it.
        payment_method_token=WITHDRAWN_CARD if doc.get("card_details") else doc.get("payment_method_token"),
        card_brand=doc.get("card_brand"),
        card_last4=doc.get("card_last4"),
    )


def _step_document(step: Step) -> dict[str, Any]:
    doc: dict[str, Any] = {"step": step.step, "status": step.status, "at": step.at}
    if step.event_id:
        doc["event_id"] = step.event_id
    if step.detail:
        doc["detail"] = step.detail
    return doc
