"""Evidence the code under test does not write through its own APIs: Kafka read from the beginning,
the gateway's ledger, the notification sender's file and every service's database read directly."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pymongo import MongoClient

from shared.config import Settings
from shared.events import ALL_TOPICS, DEAD_LETTER_TOPIC, Envelope, InvalidEvent
from shared.kafka_utils import client_config, topic_name
from tests.chaos.checks import OrderEvents


def read_topics(settings: Settings, topics: Iterable[str] = ALL_TOPICS, timeout: float = 120.0) -> list[Any]:
    """Every message on ``topics`` (the run's prefixed names), from the beginning to the end as of now."""
    consumer = Consumer(
        {
            **client_config(settings.kafka),
            "group.id": f"chaos-witness-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        names = [topic_name(settings.kafka, t) for t in topics]
        metadata = consumer.list_topics(timeout=30)
        partitions = []
        ends: dict[tuple[str, int], int] = {}
        for name in names:
            for partition in metadata.topics[name].partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=30)
                if high > 0:
                    ends[(name, partition)] = high
                    partitions.append(TopicPartition(name, partition, OFFSET_BEGINNING))
        consumer.assign(partitions)
        messages, deadline = [], time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                where = (msg.topic(), msg.partition())
                if msg.error():
                    continue
                messages.append(msg)
                if where in ends and msg.offset() >= ends[where] - 1:
                    del ends[where]
        if ends:
            raise RuntimeError(f"could not read {len(ends)} partitions to their end within {timeout:.0f}s")
        return messages
    finally:
        consumer.close()


def events_by_order(messages: Iterable[Any], dead_letter_topic: str) -> tuple[dict[str, OrderEvents], list[str], int]:
    """Group the saga's events by order; return them, the keys of the dead letters, and how many
    messages were not events (the injected poison, before it was dead-lettered)."""
    orders: dict[str, OrderEvents] = {}
    dead_keys, not_events = [], 0
    for msg in messages:
        if msg.topic() == dead_letter_topic:
            dead_keys.append((msg.key() or b"").decode(errors="replace"))
            continue
        try:
            event = Envelope.from_json(msg.value())
        except InvalidEvent:
            not_events += 1
            continue
        orders.setdefault(event.order_id, OrderEvents()).add(
            event.event_type, event.event_id, event.data, event.occurred_at
        )
    return orders, dead_keys, not_events


def dead_letter_topic(settings: Settings) -> str:
    return topic_name(settings.kafka, DEAD_LETTER_TOPIC)


def notification_lines(path: Path) -> Counter[str]:
    """Lines the file sender wrote, per order (a crash mid-write leaves at most a torn last line)."""
    counts: Counter[str] = Counter()
    if not path.exists():
        return counts
    for line in path.read_text(errors="replace").splitlines():
        try:
            counts[json.loads(line).get("order_id")] += 1
        except ValueError:
            counts["(unreadable line)"] += 1
    return counts


class Databases:
    """Each service's own database, read with the driver, not through the service."""

    def __init__(self, client: MongoClient, settings: Settings) -> None:
        self._db = {name: client[svc.database] for name, svc in settings.services.items()}

    def orders(self, order_ids: set[str]) -> dict[str, dict[str, Any]]:
        docs = self._db["order"]["orders"].find({}, {"status": 1, "failure_reason": 1})
        return {d["_id"]: d for d in docs if d["_id"] in order_ids}

    def sagas(self, order_ids: set[str]) -> dict[str, str]:
        docs = self._db["orchestrator"]["sagas"].find({}, {"state": 1})
        return {d["_id"]: d.get("state") for d in docs if d["_id"] in order_ids}

    def kept_payments(self, order_ids: set[str]) -> Counter[str]:
        docs = self._db["payment"]["payments"].find({"status": "completed"}, {"order_id": 1})
        return Counter(d["order_id"] for d in docs if d["order_id"] in order_ids)

    def notifications(self, order_ids: set[str]) -> Counter[str]:
        docs = self._db["notification"]["notifications"].find({}, {"order_id": 1})
        return Counter(d.get("order_id") for d in docs if d.get("order_id") in order_ids)

    def stock(self) -> dict[str, dict[str, Any]]:
        docs = self._db["inventory"]["stock"].find({}, {"available": 1, "reserved": 1, "sold": 1, "holds": 1})
        return {d["_id"]: d for d in docs}
