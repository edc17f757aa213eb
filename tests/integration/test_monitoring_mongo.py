"""Monitoring's Mongo repositories obey the same contracts as the fakes, on the real server."""

from __future__ import annotations

import pytest
from pymongo.database import Database

from services.monitoring.mongo import (
    MongoDeadLetterRepository,
    MongoHealthRepository,
    MongoRecentEventRepository,
    MongoStatsRepository,
    MongoTimelineRepository,
)
from tests.unit.monitoring.contract import (
    DeadLetterRepositoryContract,
    HealthRepositoryContract,
    RecentEventRepositoryContract,
    StatsRepositoryContract,
    TimelineRepositoryContract,
    item,
)


class MongoContract:
    db: Database

    @pytest.fixture(autouse=True)
    def _database(self, mongo_db: Database) -> None:
        self.db = mongo_db


class TestMongoTimelines(MongoContract, TimelineRepositoryContract):
    def make_repo(self, limit: int = 500) -> MongoTimelineRepository:
        repo = MongoTimelineRepository(lambda name: self.db[name], limit=limit)
        repo.ensure_indexes()
        return repo

    def test_the_stored_document_has_the_documented_shape(self):
        repo = self.make_repo()
        repo.append("o1", "c1", item("e1", "OrderCreated", 0))
        repo.append("o1", None, item("e2", "OrderFailed", 3, detail="payment_declined"))
        docs = [self.db[name].find_one({"_id": "o1"}) for name in self.db.list_collection_names()]
        [doc] = [d for d in docs if d is not None]
        assert doc["customer_id"] == "c1"
        assert [e["event_id"] for e in doc["events"]] == ["e1", "e2"]
        assert set(doc["events"][1]) == {
            "event_id",
            "topic",
            "event_type",
            "timestamp",
            "source",
            "received_at",
            "detail",
        }
        assert (doc["status"], doc["failure_reason"]) == ("failed", "payment_declined")
        assert (doc["last_at"] - doc["first_at"]).total_seconds() == 3

    def test_timelines_of_many_orders_spread_over_shards_and_stay_reachable(self):
        repo = self.make_repo()
        for n in range(40):
            repo.append(f"order-{n}", None, item(f"e{n}"))
        assert len([c for c in self.db.list_collection_names() if c.startswith("timelines_")]) > 10
        assert all(repo.get(f"order-{n}").events[0].event_id == f"e{n}" for n in range(40))


class TestMongoRecentEvents(MongoContract, RecentEventRepositoryContract):
    def make_repo(self) -> MongoRecentEventRepository:
        repo = MongoRecentEventRepository(self.db["recent_events"])
        repo.ensure_indexes()
        return repo


class TestMongoStats(MongoContract, StatsRepositoryContract):
    def make_repo(self) -> MongoStatsRepository:
        return MongoStatsRepository(self.db["stats"], self.db["minutes"])


class TestMongoDeadLetters(MongoContract, DeadLetterRepositoryContract):
    def make_repo(self) -> MongoDeadLetterRepository:
        repo = MongoDeadLetterRepository(self.db["dlq"])
        repo.ensure_indexes()
        return repo


class TestMongoHealth(MongoContract, HealthRepositoryContract):
    def make_repo(self) -> MongoHealthRepository:
        return MongoHealthRepository(self.db["service_health"])
