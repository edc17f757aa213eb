"""The in-memory payment and card repositories keep the same contracts as the Mongo ones."""

from __future__ import annotations

from tests.unit.payment.contract import PaymentRepositoryContract, StoredCardRepositoryContract
from tests.unit.payment.fakes import InMemoryPaymentRepository, InMemoryStoredCardRepository


class TestInMemoryPaymentRepository(PaymentRepositoryContract):
    def make_repo(self) -> InMemoryPaymentRepository:
        return InMemoryPaymentRepository()

    def queued_event_types(self, repo: InMemoryPaymentRepository, payment_id: str) -> list[str]:
        return [event.event_type for event in repo.outbox.get(payment_id, [])]


class TestInMemoryStoredCardRepository(StoredCardRepositoryContract):
    def make_cards(self) -> InMemoryStoredCardRepository:
        return InMemoryStoredCardRepository()
