"""The Mongo repositories pass the same contract as the in-memory fakes, on the real server."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database

from services.inventory.mongo import MongoReservationRepository, MongoStockRepository
from tests.unit.inventory.contract import ReservationRepositoryContract, StockRepositoryContract


class TestMongoStockRepository(StockRepositoryContract):
    @pytest.fixture(autouse=True)
    def _database(self, mongo_db: Database) -> None:
        self.db = mongo_db

    def make_repo(self) -> MongoStockRepository:
        return MongoStockRepository(self.db["stock"])


class TestMongoReservationRepository(ReservationRepositoryContract):
    @pytest.fixture(autouse=True)
    def _database(self, mongo_db: Database) -> None:
        self.db = mongo_db

    def make_repo(self) -> MongoReservationRepository:
        repo = MongoReservationRepository(self.db["reservations"], self.db["reservation_timers"])
        repo.ensure_indexes()
        return repo

    def outbox_of(self, repo: Any, reservation_id: str) -> dict[str, dict[str, Any]]:
        doc = self.db["reservations"].find_one({"_id": reservation_id}) or {}
        return doc.get("outbox") or {}
