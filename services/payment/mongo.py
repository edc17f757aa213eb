"""MongoDB storage of payments, order charge claims and the vault's cards; the only place documents
meet dataclasses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from services.payment.domain import DuplicatePayment, Payment, StoredCard, now_ms
from services.payment.ports import PaymentUpdate
from shared.events import Envelope
from shared.mongo import insert_new
from shared.outbox import BULK_CHUNK, ConditionalUpdate, OutboxRelay, bulk_update, outbox_document, outbox_fields

_FIELDS = tuple(Payment.__dataclass_fields__)


class MongoPaymentRepository:
    def __init__(self, payments: Collection, order_charges: Collection, relay: OutboxRelay | None = None) -> None:
        self._payments = payments
        self._charges = order_charges
        self._relay = relay

    def ensure_indexes(self) -> None:
        """Create the secondary indexes (the claims need only their ``_id``)."""
        self._payments.create_index([("order_id", ASCENDING), ("created_at", DESCENDING)])

    def add(self, payment: Payment) -> None:
        try:
            self._payments.insert_one(_new_document(payment))
        except DuplicateKeyError as err:
            raise DuplicatePayment(f"payment {payment.payment_id} already exists") from err

    def add_all(self, payments: Sequence[Payment]) -> list[bool]:
        return insert_new(self._payments, [_new_document(payment) for payment in payments], BULK_CHUNK)

    def get(self, payment_id: str) -> Payment | None:
        doc = self._payments.find_one({"_id": payment_id}, {"outbox": 0})
        return _from_document(doc) if doc else None

    def update(self, payment: Payment, *, expected_status: str, events: Iterable[Envelope] = ()) -> bool:
        update = PaymentUpdate(payment, expected_status, tuple(events))
        result = self._payments.update_one(*_conditional_update(update))
        if result.matched_count:
            self._notify(update)
        return result.matched_count == 1

    def update_all(self, updates: Sequence[PaymentUpdate]) -> list[bool]:
        writes = [ConditionalUpdate(u.payment.payment_id, *_conditional_update(u), u.events) for u in updates]
        return bulk_update(self._payments, writes, self._relay)

    def _notify(self, update: PaymentUpdate) -> None:
        if update.events and self._relay:
            self._relay.notify(self._payments, update.payment.payment_id, list(update.events))

    def list_by_order(self, order_id: str, limit: int) -> list[Payment]:
        cursor = (
            self._payments.find({"order_id": order_id}, {"outbox": 0})
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        return [_from_document(doc) for doc in cursor]

    def claim_order(self, order_id: str, payment_id: str) -> str:
        for _ in range(3):
            try:
                self._charges.insert_one({"_id": order_id, "payment_id": payment_id, "claimed_at": now_ms()})
                return payment_id
            except DuplicateKeyError:
                holder = self.order_holder(order_id)
                if holder:
                    return holder
                # Released between our insert and the read: try again.
        raise DuplicatePayment(f"the charge claim of order {order_id} keeps changing hands")

    def claim_all(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        now = now_ms()
        docs = [{"_id": order_id, "payment_id": payment_id, "claimed_at": now} for order_id, payment_id in claims]
        return insert_new(self._charges, docs, BULK_CHUNK)

    def order_holder(self, order_id: str) -> str | None:
        doc = self._charges.find_one({"_id": order_id})
        return doc["payment_id"] if doc else None

    def release_order(self, order_id: str, payment_id: str) -> None:
        self._charges.delete_one({"_id": order_id, "payment_id": payment_id})


class MongoStoredCardRepository:
    """The vault's cards in ``payment_methods``, by token (``_id``)."""

    def __init__(self, cards: Collection) -> None:
        self._cards = cards

    def ensure_indexes(self) -> None:
        """Index the expiry, which the purge job looks up."""
        self._cards.create_index([("expires_at", ASCENDING)])

    def add(self, card: StoredCard) -> None:
        doc = asdict(card)
        doc["_id"] = doc.pop("token")
        self._cards.insert_one(doc)

    def get_all(self, tokens: Sequence[str]) -> list[StoredCard]:
        return [_stored_card(doc) for doc in self._cards.find({"_id": {"$in": list(tokens)}})]

    def delete(self, tokens: Sequence[str]) -> int:
        return self._cards.delete_many({"_id": {"$in": list(tokens)}}).deleted_count

    def delete_expired(self, now: datetime) -> int:
        return self._cards.delete_many({"expires_at": {"$lte": now}}).deleted_count


def _stored_card(doc: dict[str, Any]) -> StoredCard:
    times = {name: _aware(doc[name]) for name in ("created_at", "expires_at")}
    return StoredCard(doc["_id"], doc["encrypted_number"], doc["brand"], doc["last4"], **times)


def _aware(moment: datetime) -> datetime:
    # Servers without tz-aware clients hand back naive UTC datetimes.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _new_document(payment: Payment) -> dict[str, Any]:
    return {**_to_document(payment), "outbox": outbox_document(())}


def _conditional_update(update: PaymentUpdate) -> tuple[dict[str, Any], dict[str, Any]]:
    fields = _to_document(update.payment)
    del fields["_id"]
    return (
        {"_id": update.payment.payment_id, "status": update.expected_status},
        {"$set": {**fields, **outbox_fields(update.events)}},
    )


def _to_document(payment: Payment) -> dict[str, Any]:
    doc = asdict(payment)
    doc["_id"] = doc.pop("payment_id")
    return doc


def _from_document(doc: dict[str, Any]) -> Payment:
    values = {name: doc.get(name) for name in _FIELDS if name != "payment_id"}
    for name in ("created_at", "updated_at"):
        if values[name] is not None:
            values[name] = _aware(values[name])
    values["refunded_amount"] = values["refunded_amount"] or 0.0
    return Payment(payment_id=doc["_id"], **values)
