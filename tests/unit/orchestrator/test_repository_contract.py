"""The in-memory saga repository honours the repository contract."""

from __future__ import annotations

from tests.unit.orchestrator.contract import SagaRepositoryContract
from tests.unit.orchestrator.fakes import InMemorySagaRepository


class TestInMemorySagaRepository(SagaRepositoryContract):
    def make_repo(self) -> InMemorySagaRepository:
        return InMemorySagaRepository()
