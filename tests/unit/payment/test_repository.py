"""The in-memory payment repository keeps the same contract as the Mongo one."""

from __future__ import annotations

from tests.unit.payment.contract import PaymentRepositoryContract
from tests.unit.payment.fakes import InMemoryPaymentRepository


class TestInMemoryPaymentRepository(PaymentRepositoryContract):
    def make_repo(self) -> InMemoryPaymentRepository:
        return InMemoryPaymentRepository()

    def queued_event_types(self, repo: InMemoryPaymentRepository, payment_id: str) -> list[str]:
        return [event.event_type for event in repo.outbox.get(payment_id, [])]
