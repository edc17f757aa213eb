"""Ports of the payment service: where payments and vaulted cards are stored and who moves the money."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.payment.domain import ChargeResult, Payment, StoredCard
from shared.events import Envelope


@dataclass(frozen=True)
class PaymentUpdate:
    """Store ``payment`` and queue ``events`` if it is still ``expected_status``."""

    payment: Payment
    expected_status: str
    events: tuple[Envelope, ...] = ()


class PaymentRepository(Protocol):
    """Payments by id, plus one claim per order naming the payment that charged it."""

    def add(self, payment: Payment) -> None:
        """Insert a new payment; raise ``DuplicatePayment`` when its id is taken."""

    def add_all(self, payments: Sequence[Payment]) -> list[bool]:
        """Insert the new payments at once; return, in order, whether each was added (False: its id is taken)."""

    def get(self, payment_id: str) -> Payment | None:
        """Return the payment or None."""

    def update(self, payment: Payment, *, expected_status: str, events: Iterable[Envelope] = ()) -> bool:
        """Store ``payment`` and queue ``events`` in one write if it is still ``expected_status``."""

    def update_all(self, updates: Sequence[PaymentUpdate]) -> list[bool]:
        """Apply each update as ``update`` would, at once (at most one per payment); return, in order,
        whether each was stored. An update that cannot be confirmed counts as not stored."""

    def list_by_order(self, order_id: str, limit: int) -> list[Payment]:
        """Return an order's payments, newest first."""

    def claim_order(self, order_id: str, payment_id: str) -> str:
        """Record ``payment_id`` as the order's charge unless one is recorded; return the holder."""

    def claim_all(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        """Record each (order id, payment id) claim unless the order has one; return, in order,
        whether each was recorded now (False: ask ``claim_order`` who holds it)."""

    def order_holder(self, order_id: str) -> str | None:
        """Return the payment id recorded as the order's charge, if any."""

    def release_order(self, order_id: str, payment_id: str) -> None:
        """Forget the order's charge if ``payment_id`` still holds it."""


class StoredCardRepository(Protocol):
    """The vault's cards by token (their numbers encrypted before they get here)."""

    def add(self, card: StoredCard) -> None:
        """Store a new card."""

    def get_all(self, tokens: Sequence[str]) -> list[StoredCard]:
        """Return the stored cards of these tokens (unknown tokens are left out), expired or not."""

    def delete(self, tokens: Sequence[str]) -> int:
        """Delete the cards of these tokens; return how many were there."""

    def delete_expired(self, now: datetime) -> int:
        """Delete the cards whose ``expires_at`` is at or before ``now``; return how many."""


class PaymentGateway(Protocol):
    """A payment provider.

    ``idempotency_key`` must make a repeated call return the first call's outcome without
    moving money again: the service repeats a charge after a crash mid-charge, and a real
    gateway adapter must pass the key on (e.g. Stripe's ``Idempotency-Key`` header).
    """

    def charge(
        self,
        amount: float,
        payment_method: str,
        card_number: str | None,
        *,
        idempotency_key: str,
        order_id: str | None = None,
    ) -> ChargeResult:
        """Charge ``amount`` for ``order_id`` (the provider's reference); a decline is a result, not an exception."""

    def refund(
        self, amount: float, gateway_ref: str | None, *, idempotency_key: str, order_id: str | None = None
    ) -> None:
        """Give back ``amount`` of the charge ``gateway_ref``; raise when the provider refuses."""
