"""Duplicates, dead-letter replay and outages of the database and the broker, against the running stack."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer

from devstack import infra
from shared.events import DEAD_LETTER_TOPIC, TOPIC_BY_EVENT, Envelope
from shared.kafka_utils import make_publisher, topic_name
from tests.e2e.conftest import create_product, order_body, stock, wait_until


def notifications_of(stack, customer_id: str) -> list[dict]:
    response = stack.http.get(
        stack.url("notification", "/notifications"), params={"customer_id": customer_id}, timeout=5
    )
    return response.json()["notifications"]


def snapshot(stack, order_id: str, customer_id: str, product: str) -> dict:
    payments = stack.http.get(stack.url("payment", "/payments"), params={"order_id": order_id}, timeout=5).json()
    timeline = stack.http.get(stack.url("monitoring", f"/orders/{order_id}/events"), timeout=5).json()
    return {
        "stock": {k: stock(stack, product)[k] for k in ("available", "reserved", "sold")},
        "payments": sorted((p["payment_id"], p["status"]) for p in payments["payments"]),
        "notifications": sorted(n["notification_id"] for n in notifications_of(stack, customer_id)),
        "timeline": sorted(e["event_id"] for e in timeline.get("events", [])),
        "order": stack.http.get(stack.url("order", f"/orders/{order_id}"), timeout=5).json()["status"],
    }


def messages_of(stack, order_id: str) -> list:
    """Every message of one order on every event topic, read back from Kafka."""
    kafka = stack.settings.kafka
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"e2e-read-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(sorted({topic_name(kafka, t) for t in TOPIC_BY_EVENT.values()}))
    found, idle_since = [], time.monotonic()
    try:
        while time.monotonic() - idle_since < 5:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            idle_since = time.monotonic()
            if msg.key() == order_id.encode():
                found.append(msg)
    finally:
        consumer.close()
    return found


def test_republishing_an_orders_processed_events_changes_nothing(stack, place, terminal):
    product = f"dup-{uuid.uuid4().hex[:8]}"
    create_product(stack, product, price=12.5, quantity=10)
    body = order_body([(product, 2, 12.5)])
    order_id = place(body)["order_id"]
    assert terminal(order_id)["status"] == "completed"
    before = wait_until(
        lambda: (
            (s := snapshot(stack, order_id, body["customer_id"], product))["notifications"]
            and len(s["timeline"]) >= 11
            and s
        ),
        what="the order's last events",
    )

    messages = messages_of(stack, order_id)
    assert len(messages) >= 11
    publisher = make_publisher(stack.settings.kafka, "e2e-republisher")
    for msg in messages:
        publisher.produce(msg.topic(), msg.key(), msg.value())
    publisher.flush(10)
    time.sleep(8)  # give every consumer time to (not) react

    assert snapshot(stack, order_id, body["customer_id"], product) == before


def test_a_replayed_dead_letter_is_applied_once_however_often_it_is_replayed(stack):
    customer = f"dlq-{uuid.uuid4().hex[:8]}"
    order_id = str(uuid.uuid4())
    lost = Envelope(
        event_type="NotificationRequested",
        order_id=order_id,
        source="orchestrator",
        customer_id=customer,
        data={"customer_id": customer, "customer_email": None, "type": "order_confirmation",
              "subject": "Order confirmed", "message": "Your order is confirmed"},
    )  # fmt: skip
    kafka = stack.settings.kafka
    original = topic_name(kafka, lost.topic)
    headers = [
        ("original_topic", original.encode()),
        ("original_partition", b"0"),
        ("original_offset", b"0"),
        ("error", b"RuntimeError: simulated outage of the sender"),
        ("attempts", b"3"),
        ("service", b"notification"),
        ("consumer_group", b"notification-service"),
    ]
    make_publisher(kafka, "e2e-dlq").produce_sync(
        topic_name(kafka, DEAD_LETTER_TOPIC), lost.key, lost.to_json(), headers
    )

    def entry():
        entries = stack.http.get(stack.url("monitoring", "/dlq"), params={"limit": 500}, timeout=5).json()["entries"]
        return next((e for e in entries if e.get("key") == order_id), None)

    letter = wait_until(entry, what="the dead letter in monitoring")
    assert letter["topic"] == original and letter["service"] == "notification"
    for count in (1, 2):
        replay = stack.http.post(stack.url("monitoring", f"/dlq/{letter['id']}/replay"), timeout=10)
        assert replay.status_code == 202, replay.text
        assert replay.json()["replayed_count"] == count
    wait_until(lambda: notifications_of(stack, customer), what="the replayed notification")
    time.sleep(3)
    assert len(notifications_of(stack, customer)) == 1


def dependency_status(stack, service: str, dependency: str) -> tuple[int, str]:
    response = stack.http.get(stack.url(service, "/health/detailed"), timeout=15)
    return response.status_code, response.json()["dependencies"][dependency]["status"]


@pytest.fixture
def managed_servers(stack):
    if stack.settings.kafka.external or stack.settings.mongo.external:
        pytest.skip("outage tests stop and start the local servers; these are external")
    yield
    # Whatever happened in the test, leave both servers running.
    infra.start_mongo()
    infra.start_kafka()


def test_a_database_outage_answers_503_and_every_accepted_order_finishes_afterwards(
    stack, place, terminal, managed_servers
):
    accepted = [place(order_body([("usb_cable", 1, 9.99)]))["order_id"] for _ in range(3)]
    infra.stop_mongo()
    try:
        started = time.monotonic()
        response = stack.http.post(stack.url("order", "/orders"), json=order_body([("usb_cable", 1, 9.99)]), timeout=30)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "database_unavailable"
        assert time.monotonic() - started < 15, "a request must not hang while the database is down"
        assert dependency_status(stack, "inventory", "mongo") == (503, "down")
        time.sleep(10)  # consumers meet the outage too, and must wait it out
    finally:
        infra.start_mongo()
    wait_until(lambda: dependency_status(stack, "inventory", "mongo") == (200, "up"), what="recovery")
    for order_id in accepted:
        assert terminal(order_id, timeout=120)["status"] == "completed"
    assert terminal(place(order_body([("usb_cable", 1, 9.99)]))["order_id"])["status"] == "completed"


def test_a_broker_outage_keeps_accepting_orders_and_delivers_them_afterwards(stack, place, terminal, managed_servers):
    infra.stop_kafka()
    try:
        # The order and its event are written to the database together; the relay waits for Kafka.
        accepted = [place(order_body([("mouse", 1, 29.99)]))["order_id"] for _ in range(3)]
        wait_until(lambda: dependency_status(stack, "order", "kafka") == (503, "down"), what="the outage to show")
        for order_id in accepted:
            assert stack.http.get(stack.url("order", f"/orders/{order_id}"), timeout=5).json()["status"] == "pending"
    finally:
        infra.start_kafka()
    wait_until(lambda: dependency_status(stack, "order", "kafka") == (200, "up"), timeout=60, what="recovery")
    for order_id in accepted:
        assert terminal(order_id, timeout=120)["status"] == "completed"
