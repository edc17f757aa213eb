"""In-memory fakes of the order service's ports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from services.order.domain import Cursor, Order, OrderExists, PaymentVaultUnavailable, Transition, VaultedCard
from services.order.ports import IdempotencyRecord
from shared.events import Envelope


class FakeCardVault:
    """The payment service's vault as a dict of token -> number; ``available = False`` refuses cards."""

    def __init__(self) -> None:
        self.cards: dict[str, str] = {}
        self.available = True

    def store(self, card_number: str) -> VaultedCard:
        if not self.available:
            raise PaymentVaultUnavailable("the payment service's vault did not answer")
        token = f"pm_test{len(self.cards) + 1}"
        self.cards[token] = card_number
        return VaultedCard(token, "visa" if card_number.startswith("4") else "other", card_number[-4:])


class InMemoryOrderRepository:
    """Orders and idempotency keys in dicts; ``events`` lists every event written to an outbox."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.keys: dict[str, IdempotencyRecord] = {}
        self.events: list[Envelope] = []

    def add(self, order: Order, events: list[Envelope]) -> None:
        if order.order_id in self.orders:
            raise OrderExists(order.order_id)
        self.orders[order.order_id] = order
        self.events.extend(events)

    def get(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    def list(self, *, customer_id: str | None, status: str | None, limit: int, after: Cursor | None) -> list[Order]:
        matching = [
            o
            for o in self.orders.values()
            if (customer_id is None or o.customer_id == customer_id)
            and (status is None or o.status == status)
            and (after is None or after.admits(o))
        ]
        matching.sort(key=lambda o: (o.created_at, o.order_id), reverse=True)
        return matching[:limit]

    def advance(self, order_id: str, transition: Transition) -> bool:
        order = self.orders.get(order_id)
        moved = order.advance(transition) if order else None
        if moved is None:
            return False
        self.orders[order_id] = moved
        return True

    def advance_many(self, moves: Sequence[tuple[str, Transition]]) -> list[bool]:
        return [self.advance(order_id, transition) for order_id, transition in moves]

    def request_cancel(self, order_id: str, at: datetime, events: list[Envelope]) -> bool:
        order = self.orders.get(order_id)
        if order is None or order.terminal or order.cancel_requested_at is not None:
            return False
        self.orders[order_id] = replace(order, cancel_requested_at=at, updated_at=at)
        self.events.extend(events)
        return True

    def claim_key(self, record: IdempotencyRecord) -> tuple[IdempotencyRecord, bool]:
        stored = self.keys.setdefault(record.key, record)
        return stored, stored is record

    def purge_keys(self, older_than: datetime) -> int:
        expired = [key for key, record in self.keys.items() if record.created_at < older_than]
        for key in expired:
            del self.keys[key]
        return len(expired)
