"""The in-memory fakes obey the same contracts as the Mongo repositories."""

from __future__ import annotations

from tests.unit.monitoring.contract import (
    DeadLetterRepositoryContract,
    HealthRepositoryContract,
    RecentEventRepositoryContract,
    StatsRepositoryContract,
    TimelineRepositoryContract,
)
from tests.unit.monitoring.fakes import (
    InMemoryDeadLetterRepository,
    InMemoryHealthRepository,
    InMemoryRecentEventRepository,
    InMemoryStatsRepository,
    InMemoryTimelineRepository,
)


class TestInMemoryTimelines(TimelineRepositoryContract):
    def make_repo(self, limit: int = 500) -> InMemoryTimelineRepository:
        return InMemoryTimelineRepository(limit)


class TestInMemoryRecentEvents(RecentEventRepositoryContract):
    def make_repo(self) -> InMemoryRecentEventRepository:
        return InMemoryRecentEventRepository()


class TestInMemoryStats(StatsRepositoryContract):
    def make_repo(self) -> InMemoryStatsRepository:
        return InMemoryStatsRepository()


class TestInMemoryDeadLetters(DeadLetterRepositoryContract):
    def make_repo(self) -> InMemoryDeadLetterRepository:
        return InMemoryDeadLetterRepository()


class TestInMemoryHealth(HealthRepositoryContract):
    def make_repo(self) -> InMemoryHealthRepository:
        return InMemoryHealthRepository()
