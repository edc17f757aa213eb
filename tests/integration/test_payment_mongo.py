"""The Mongo payment and card repositories keep the same contracts as the in-memory fakes."""

from __future__ import annotations

import pytest
from pymongo.database import Database

from services.payment.mongo import MongoPaymentRepository, MongoStoredCardRepository
from tests.unit.payment.contract import PaymentRepositoryContract, StoredCardRepositoryContract, a_payment


class TestMongoPaymentRepository(PaymentRepositoryContract):
    @pytest.fixture(autouse=True)
    def _database(self, mongo_db: Database) -> None:
        self.db = mongo_db

    def make_repo(self) -> MongoPaymentRepository:
        repo = MongoPaymentRepository(self.db["payments"], self.db["order_charges"])
        repo.ensure_indexes()
        return repo

    def queued_event_types(self, repo: MongoPaymentRepository, payment_id: str) -> list[str]:
        doc = self.db["payments"].find_one({"_id": payment_id}) or {}
        return [event["event_type"] for event in (doc.get("outbox") or {}).values()]

    def test_documents_hold_the_last_four_digits_only(self) -> None:
        repo = self.make_repo()
        repo.add(a_payment())
        doc = self.db["payments"].find_one({"_id": "pay_1"})
        assert doc["card_last4"] == "4242"
        assert "4242424242424242" not in repr(doc)
        assert doc["outbox"] == {}


class TestMongoStoredCardRepository(StoredCardRepositoryContract):
    @pytest.fixture(autouse=True)
    def _database(self, mongo_db: Database) -> None:
        self.db = mongo_db

    def make_cards(self) -> MongoStoredCardRepository:
        cards = MongoStoredCardRepository(self.db["payment_methods"])
        cards.ensure_indexes()
        return cards
