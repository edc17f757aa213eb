"""The in-memory fakes pass the same contract as the Mongo repositories."""

from __future__ import annotations

from typing import Any

from tests.unit.inventory.contract import ReservationRepositoryContract, StockRepositoryContract
from tests.unit.inventory.fakes import InMemoryReservationRepository, InMemoryStockRepository


class TestInMemoryStockRepository(StockRepositoryContract):
    def make_repo(self) -> InMemoryStockRepository:
        return InMemoryStockRepository()


class TestInMemoryReservationRepository(ReservationRepositoryContract):
    def make_repo(self) -> InMemoryReservationRepository:
        return InMemoryReservationRepository()

    def outbox_of(self, repo: Any, reservation_id: str) -> dict[str, dict[str, Any]]:
        return repo.outboxes.get(reservation_id, {})
