"""The Mongo order repository honours the same contract as the in-memory fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pymongo.database import Database

from services.order.mongo import MongoOrderRepository
from services.order.service import created_event
from shared.config import Settings
from shared.kafka_utils import KafkaPublisher, make_publisher
from shared.outbox import OutboxRelay
from tests.unit.order.contract import OrderRepositoryContract, make_order
from tests.unit.order.samples import CARD

SCAN = {"recover_interval_s": 300, "scan_timeout_s": 300}  # the recovery scan, as config.yaml sets it


@pytest.fixture(scope="module")
def publisher(live_settings: Settings) -> Iterator[KafkaPublisher]:
    # The relay is never started here: the contract reads the outbox before anything publishes it.
    publisher = make_publisher(live_settings.kafka, client_id="order-contract-test")
    yield publisher
    publisher.flush(5)


class TestMongoOrderRepository(OrderRepositoryContract):
    @pytest.fixture(autouse=True)
    def _database(self, mongo_db: Database, publisher: KafkaPublisher) -> None:
        self.db = mongo_db
        self.publisher = publisher

    def make_repo(self) -> MongoOrderRepository:
        relay = OutboxRelay(self.publisher, [self.db["orders"]], retry_interval_s=1.0, clear_interval_s=0.5, **SCAN)
        repo = MongoOrderRepository(self.db["orders"], self.db["idempotency_keys"], relay)
        repo.ensure_indexes()
        return repo

    def outbox_types(self, repo: MongoOrderRepository, order_id: str) -> list[str]:
        doc = self.db["orders"].find_one({"_id": order_id}, {"outbox": 1}) or {}
        events = sorted((doc.get("outbox") or {}).values(), key=lambda e: e["occurred_at"])
        return [e["event_type"] for e in events]


def test_neither_the_order_nor_its_outbox_holds_the_card_number(mongo_db: Database, publisher: KafkaPublisher) -> None:
    repo = MongoOrderRepository(
        mongo_db["orders"],
        mongo_db["idempotency_keys"],
        OutboxRelay(publisher, [], retry_interval_s=1.0, clear_interval_s=0.5, **SCAN),
    )
    order = make_order()
    repo.add(order, [created_event(order)])
    assert CARD not in repr(mongo_db["orders"].find_one({"_id": order.order_id}))
    assert CARD not in repr(repo.get(order.order_id))
    assert CARD not in repr(repo.list(customer_id=None, status=None, limit=5, after=None))
