"""The in-memory fake honours the repository contract."""

from __future__ import annotations

from tests.unit.order.contract import OrderRepositoryContract
from tests.unit.order.fakes import InMemoryOrderRepository


class TestInMemoryOrderRepository(OrderRepositoryContract):
    def make_repo(self) -> InMemoryOrderRepository:
        return InMemoryOrderRepository()

    def outbox_types(self, repo: InMemoryOrderRepository, order_id: str) -> list[str]:
        return [e.event_type for e in repo.events if e.order_id == order_id]
