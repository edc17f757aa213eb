"""What the order service needs from storage and from the payment service's card vault."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.order.domain import Cursor, Order, Transition, VaultedCard
from shared.events import Envelope


@dataclass(frozen=True)
class IdempotencyRecord:
    """An idempotency key, the fingerprint of the request that first used it, and its order id."""

    key: str
    fingerprint: str
    order_id: str
    created_at: datetime


class OrderRepository(Protocol):
    def add(self, order: Order, events: list[Envelope]) -> None:
        """Store a new order together with its events; raise OrderExists if the id is taken."""

    def get(self, order_id: str) -> Order | None:
        """Return the order, or None."""

    def list(self, *, customer_id: str | None, status: str | None, limit: int, after: Cursor | None) -> list[Order]:
        """Return up to ``limit`` matching orders, newest first, after ``after``."""

    def advance(self, order_id: str, transition: Transition) -> bool:
        """Apply the transition if the order's status allows it; return whether it did."""

    def advance_many(self, moves: Sequence[tuple[str, Transition]]) -> list[bool]:
        """Apply the transitions in turn, as ``advance`` would one by one; return whether each did."""

    def request_cancel(self, order_id: str, at: datetime, events: list[Envelope]) -> bool:
        """Mark a live order as cancel-requested with its events, once; return whether it did."""

    def claim_key(self, record: IdempotencyRecord) -> tuple[IdempotencyRecord, bool]:
        """Store the key unless it exists; return the stored record and whether it is ``record``."""

    def purge_keys(self, older_than: datetime) -> int:
        """Delete idempotency keys created before ``older_than``; return how many."""


class CardVault(Protocol):
    """The payment service's vault: the only place a card number goes from the order API."""

    def store(self, card_number: str) -> VaultedCard:
        """Hand over the card number for a token; raise PaymentVaultUnavailable when it is not taken."""
