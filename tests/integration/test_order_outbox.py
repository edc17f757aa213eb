"""An order placed over HTTP leaves through the outbox: its OrderCreated event reaches Kafka."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from pymongo.database import Database

from services.order.app import bootstrap, create_app
from shared.config import Settings
from shared.kafka_utils import make_consumer, topic_name
from shared.runtime import connect
from tests.unit.order.fakes import FakeCardVault
from tests.unit.order.samples import CARD, order_body


def test_order_created_event_is_relayed_to_kafka(
    live_settings: Settings,
    service_settings: Callable[..., Settings],
    mongo_db: Database,
    unique: Callable[[str], str],
) -> None:
    settings = service_settings("order")
    clients = connect(settings)
    service = bootstrap(settings, clients=clients, vault=FakeCardVault())
    (relay,) = clients.relays
    relay.start()
    customer = unique("customer")
    try:
        response = (
            create_app(settings, service=service).test_client().post("/orders", json=order_body(customer_id=customer))
        )
        assert response.status_code == 201
        order_id = response.get_json()["order_id"]
        event = _find_created_event(settings, unique("order-outbox-test"), order_id, timeout=30.0)
    finally:
        relay.stop(timeout=5)
        clients.mongo.close()
    assert event is not None, "OrderCreated never reached orders.created"
    assert event["source"] == "order"
    assert event["data"]["customer_id"] == customer
    assert (event["data"]["payment_method_token"], event["data"]["card_last4"]) == ("pm_test1", "1111")
    assert CARD not in json.dumps(event)
    assert event["data"]["total_amount"] == 44.98
    assert _outbox_drained(mongo_db, order_id, timeout=10.0), "the relay left the event in the outbox"


def _find_created_event(settings: Settings, group: str, order_id: str, timeout: float) -> dict | None:
    consumer = make_consumer(settings.kafka, group, client_id=group)
    consumer.subscribe([topic_name(settings.kafka, "orders.created")])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or msg.key() != order_id.encode():
                continue
            event = json.loads(msg.value())
            if event.get("event_type") == "OrderCreated":
                return event
    finally:
        consumer.close()
    return None


def _outbox_drained(db: Database, order_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not (db["orders"].find_one({"_id": order_id}, {"outbox": 1}) or {}).get("outbox"):
            return True
        time.sleep(0.1)
    return False
