"""Monitoring's Mongo repositories obey the same contracts as the fakes, on the real server."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import REGISTRY
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
        repo = MongoTimelineRepository(self.db["timelines"], self.db["open_orders"], limit=limit)
        repo.ensure_indexes()
        return repo

    def test_the_stored_document_has_the_documented_shape(self):
        repo = self.make_repo()
        repo.append("o1", "c1", item("e1", "OrderCreated", 0))
        repo.append("o1", None, item("e2", "OrderFailed", 3, detail="payment_declined"))
        doc = self.db["timelines"].find_one({"_id": "o1"})
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

    def test_append_many_is_one_round_trip_for_new_events(self):
        repo = self.make_repo()
        before = _commands("update", "timelines")
        added = repo.append_many([(f"order-{n % 10}", None, item(f"e{n}", seconds=n)) for n in range(40)])
        assert added == [True] * 40
        assert _commands("update", "timelines") == before + 1
        assert all(len(repo.get(f"order-{n}").events) == 4 for n in range(10))

    def test_a_batch_racing_another_writer_loses_no_event(self):
        first = self.make_repo()
        second = MongoTimelineRepository(self.db["timelines"], self.db["open_orders"])
        entries = [(f"order-{n}", None, item(f"e{n}")) for n in range(30)]
        results: list[list[bool]] = []
        threads = [
            threading.Thread(target=lambda r=repo: results.append(r.append_many(entries))) for repo in (first, second)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Each event went in exactly once, and exactly one of the two writers says it added it.
        assert [a + b for a, b in zip(*results, strict=True)] == [1] * 30
        assert all(len(first.get(f"order-{n}").events) == 1 for n in range(30))


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


def _commands(command: str, collection: str) -> float:
    return REGISTRY.get_sample_value("mongo_commands_total", {"command": command, "collection": collection}) or 0.0
