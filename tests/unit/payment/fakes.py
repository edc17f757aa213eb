"""In-memory fakes of the payment service's ports."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from datetime import datetime

from cryptography.fernet import Fernet
from pydantic import SecretStr

from services.payment.domain import ChargeResult, DuplicatePayment, Payment, StoredCard
from services.payment.ports import PaymentUpdate
from services.payment.vault import CardVault
from shared.events import Envelope

VAULT_KEY = SecretStr(Fernet.generate_key().decode())


class InMemoryPaymentRepository:
    """Payments and order claims in dicts; each payment's queued events stay in ``outbox``."""

    def __init__(self) -> None:
        self.payments: dict[str, Payment] = {}
        self.outbox: dict[str, list[Envelope]] = {}
        self.claims: dict[str, str] = {}
        self.bulk_writes = 0

    @property
    def events(self) -> list[Envelope]:
        return [event for events in self.outbox.values() for event in events]

    def add(self, payment: Payment) -> None:
        if payment.payment_id in self.payments:
            raise DuplicatePayment(f"payment {payment.payment_id} already exists")
        self.payments[payment.payment_id] = copy.deepcopy(payment)
        self.outbox[payment.payment_id] = []

    def add_all(self, payments: Sequence[Payment]) -> list[bool]:
        self.bulk_writes += 1
        added = []
        for payment in payments:
            try:
                self.add(payment)
                added.append(True)
            except DuplicatePayment:
                added.append(False)
        return added

    def get(self, payment_id: str) -> Payment | None:
        payment = self.payments.get(payment_id)
        return copy.deepcopy(payment) if payment else None

    def update(self, payment: Payment, *, expected_status: str, events: Iterable[Envelope] = ()) -> bool:
        stored = self.payments.get(payment.payment_id)
        if stored is None or stored.status != expected_status:
            return False
        self.payments[payment.payment_id] = copy.deepcopy(payment)
        self.outbox[payment.payment_id].extend(events)
        return True

    def update_all(self, updates: Sequence[PaymentUpdate]) -> list[bool]:
        self.bulk_writes += 1
        return [self.update(u.payment, expected_status=u.expected_status, events=u.events) for u in updates]

    def list_by_order(self, order_id: str, limit: int) -> list[Payment]:
        found = [p for p in self.payments.values() if p.order_id == order_id]
        found.sort(key=lambda p: (p.created_at, p.payment_id), reverse=True)
        return [copy.deepcopy(p) for p in found[:limit]]

    def claim_order(self, order_id: str, payment_id: str) -> str:
        return self.claims.setdefault(order_id, payment_id)

    def claim_all(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        self.bulk_writes += 1
        recorded = []
        for order_id, payment_id in claims:
            recorded.append(order_id not in self.claims)
            self.claims.setdefault(order_id, payment_id)
        return recorded

    def order_holder(self, order_id: str) -> str | None:
        return self.claims.get(order_id)

    def release_order(self, order_id: str, payment_id: str) -> None:
        if self.claims.get(order_id) == payment_id:
            del self.claims[order_id]


class InMemoryStoredCardRepository:
    """The vault's cards in a dict by token."""

    def __init__(self) -> None:
        self.cards: dict[str, StoredCard] = {}

    def add(self, card: StoredCard) -> None:
        self.cards[card.token] = card

    def get_all(self, tokens: Sequence[str]) -> list[StoredCard]:
        return [self.cards[token] for token in tokens if token in self.cards]

    def delete(self, tokens: Sequence[str]) -> int:
        return sum(self.cards.pop(token, None) is not None for token in tokens)

    def delete_expired(self, now: datetime) -> int:
        expired = [token for token, card in self.cards.items() if card.expires_at <= now]
        return self.delete(expired)


def in_memory_vault(cards: InMemoryStoredCardRepository | None = None, **kwargs: object) -> CardVault:
    """A vault over an in-memory store with a fresh key (pass ``key=None`` for one without)."""
    options: dict = {"key": VAULT_KEY, "ttl_s": 3600.0, **kwargs}
    return CardVault(cards if cards is not None else InMemoryStoredCardRepository(), **options)


class ScriptedGateway:
    """A gateway that gives pre-set answers (an exception is raised) and records money moved by key."""

    def __init__(self, *answers: ChargeResult | Exception) -> None:
        self._answers = list(answers)
        self.charged: dict[str, float] = {}
        self.refunded: dict[str, float] = {}
        self.calls = 0

    def charge(
        self,
        amount: float,
        payment_method: str,
        card_number: str | None,
        *,
        idempotency_key: str,
        order_id: str | None = None,
    ) -> ChargeResult:
        self.calls += 1
        result = self._answers.pop(0) if self._answers else ChargeResult(True, gateway_ref="ref")
        if isinstance(result, Exception):
            raise result
        if result.approved:
            self.charged[idempotency_key] = amount
        return result

    def refund(
        self, amount: float, gateway_ref: str | None, *, idempotency_key: str, order_id: str | None = None
    ) -> None:
        self.refunded[idempotency_key] = amount
