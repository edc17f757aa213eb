"""Monitoring's consumers on the real Kafka and Mongo: timelines from events, the raw DLQ and replay."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from services.monitoring.app import bootstrap, create_app
from services.monitoring.domain import UnknownOrder, iso
from services.monitoring.handlers import HANDLERS
from services.monitoring.service import MonitoringService
from services.monitoring.worker import DeadLetterConsumer
from shared.config import Settings
from shared.consuming import ConsumerOptions, ConsumerRunner
from shared.events import DEAD_LETTER_TOPIC, TOPIC_BY_EVENT, Envelope, utc_now
from shared.kafka_utils import (
    KafkaPublisher,
    bind_handlers,
    ensure_topics,
    make_consumer,
    make_producer,
    topic_name,
)
from shared.mongo import is_transient
from shared.runtime import Clients, connect

WAIT_S = 30.0


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``check`` every 0.1 s until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def start_at_end(settings: Settings, group: str, topics: list[str]) -> None:
    """Commit a fresh group's offsets at the end of ``topics`` so it skips other tests' history."""
    consumer = make_consumer(settings.kafka, group, client_id="monitoring-test-seek")
    try:
        offsets = []
        metadata = consumer.list_topics(timeout=10)
        for topic in (topic_name(settings.kafka, t) for t in topics):
            for partition in metadata.topics[topic].partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                offsets.append(TopicPartition(topic, partition, high))
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


@pytest.fixture
def settings(service_settings: Callable[..., Settings]) -> Settings:
    settings = service_settings("monitoring")
    ensure_topics(settings.kafka)
    return settings


@pytest.fixture
def clients(settings: Settings) -> Iterator[Clients]:
    clients = connect(settings)
    yield clients
    clients.publisher.flush(5)
    clients.mongo.close()


@pytest.fixture
def service(settings: Settings, clients: Clients) -> MonitoringService:
    return bootstrap(settings, clients=clients, lag=lambda: None)


@pytest.fixture
def publisher(settings: Settings) -> KafkaPublisher:
    return KafkaPublisher(make_producer(settings.kafka, client_id="monitoring-test"), settings.kafka.topic_prefix)


def run_in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_the_worker_builds_a_fresh_orders_timeline_from_real_topics(
    settings: Settings, clients: Clients, service: MonitoringService, publisher: KafkaPublisher, unique
):
    group = unique("monitoring-test")
    start_at_end(settings, group, sorted(set(TOPIC_BY_EVENT.values())))
    runner = ConsumerRunner(
        make_consumer(settings.kafka, group, client_id="monitoring-test"),
        clients.publisher,
        bind_handlers(HANDLERS, service),
        ConsumerOptions("monitoring", group, settings.consumer, is_transient=is_transient),
    )
    thread = run_in_thread(lambda: runner.run(install_signal_handlers=False))
    try:
        order_id = unique("order")
        start = utc_now() - timedelta(seconds=2)
        created = Envelope(
            "OrderCreated", order_id, "order", {"total_amount": 10.0}, customer_id="c1", occurred_at=iso(start)
        )
        events = [
            created,
            created.follow("OrderValidated", "orchestrator", {"total_amount": 10.0}),
            created.follow("PaymentCompleted", "payment", {"payment_id": "pay_" + order_id, "amount": 10.0}),
            created.follow("OrderCompleted", "orchestrator", {"total_amount": 10.0}),
        ]
        # Published in reverse, and the first one twice: the timeline must still be in time order, once each.
        for event in [*reversed(events), events[-1]]:
            publisher.publish_sync(event)

        def complete_timeline() -> Any:
            try:
                timeline = service.timeline(order_id)
            except UnknownOrder:
                return None
            return timeline if len(timeline.events) == len(events) else None

        timeline = wait_for(complete_timeline, f"the timeline of {order_id}")
        assert timeline.events[0].event_id == created.event_id
        assert {e.event_id for e in timeline.events} == {e.event_id for e in events}
        assert timeline.status == "completed"
        wait_for(lambda: service.performance()["totals"]["orders_completed"] == 1, "the completed count")
        totals = service.performance()["totals"]
        assert (totals["orders_created"], totals["payments_completed"]) == (1, 1)

        observed = create_app(settings, service=service).test_client().get(f"/timelines/{order_id}").get_json()
        assert observed["status"] == "completed"
        assert observed["events"][0]["event_type"] == "OrderCreated"
        assert observed["duration_s"] >= 1.9
    finally:
        runner.stop()
        thread.join(15)


def test_a_raw_dead_letter_is_stored_and_replayed_to_its_original_topic(
    settings: Settings, service: MonitoringService, publisher: KafkaPublisher, unique
):
    dlq_group = unique("monitoring-dlq-test")
    start_at_end(settings, dlq_group, [DEAD_LETTER_TOPIC])
    dlq = DeadLetterConsumer(
        make_consumer(settings.kafka, dlq_group, client_id="monitoring-dlq-test"),
        service.record_dead_letter,
        topic=topic_name(settings.kafka, DEAD_LETTER_TOPIC),
    )
    thread = run_in_thread(dlq.run)
    original_topic = topic_name(settings.kafka, TOPIC_BY_EVENT["OrderCancelRequested"])
    key = unique("dlq-key").encode()
    value = b"\xff{not json at all"
    headers = [
        ("original_topic", original_topic.encode()),
        ("original_partition", b"0"),
        ("original_offset", b"17"),
        ("error", b"InvalidEvent: message is not valid JSON"),
        ("attempts", b"1"),
        ("service", b"orchestrator"),
        ("consumer_group", b"orchestrator-service"),
    ]
    try:
        publisher.produce_sync(topic_name(settings.kafka, DEAD_LETTER_TOPIC), key, value, headers)
        client = create_app(settings, service=service).test_client()

        def stored() -> Any:
            entries = client.get("/dlq?limit=500").get_json()["entries"]
            return next((e for e in entries if e["key"] == key.decode()), None)

        entry = wait_for(stored, "the dead letter in /dlq")
        assert entry["topic"] == original_topic
        assert (entry["error"], entry["service"], entry["offset"]) == (
            "InvalidEvent: message is not valid JSON",
            "orchestrator",
            17,
        )
        assert entry["value_encoding"] == "base64"
        assert service.performance()["totals"]["dlq_total"] == 1

        reader = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "group.id": unique("replay-check"),
                "enable.auto.commit": False,
            }
        )
        partitions = reader.list_topics(original_topic, timeout=10).topics[original_topic].partitions
        reader.assign(
            [
                TopicPartition(original_topic, p, reader.get_watermark_offsets(TopicPartition(original_topic, p))[1])
                for p in partitions
            ]
        )
        try:
            response = client.post(f"/dlq/{entry['id']}/replay")
            assert response.status_code == 202
            assert response.get_json() == {"id": entry["id"], "topic": original_topic, "replayed_count": 1}

            def replayed() -> Any:
                msg = reader.poll(0.5)
                return msg if msg is not None and not msg.error() and msg.key() == key else None

            msg = wait_for(replayed, "the replayed message on its original topic")
            assert msg.value() == value
            assert dict(msg.headers())["replayed_from"] == entry["id"].encode()
        finally:
            reader.close()
    finally:
        dlq.stop()
        thread.join(15)
