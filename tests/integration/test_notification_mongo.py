"""The Mongo notification repository keeps the same contract as the in-memory fake."""

from __future__ import annotations

import pytest
from pymongo.database import Database

from services.notification.mongo import MongoNotificationRepository
from tests.unit.notification.contract import NotificationRepositoryContract


class TestMongoNotificationRepository(NotificationRepositoryContract):
    @pytest.fixture(autouse=True)
    def _database(self, mongo_db: Database) -> None:
        self.db = mongo_db

    def make_repo(self) -> MongoNotificationRepository:
        repo = MongoNotificationRepository(self.db["notifications"])
        repo.ensure_indexes()
        return repo

    def queued_event_types(self, repo: MongoNotificationRepository, notification_id: str) -> list[str]:
        doc = self.db["notifications"].find_one({"_id": notification_id}) or {}
        return [event["event_type"] for event in (doc.get("outbox") or {}).values()]
