"""Kafka plumbing for every service: producer, publisher, consumer factory, topic admin, handler types.

The consumer runner is in shared/consuming.py.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
from prometheus_client import Counter

from shared.config import KafkaSettings
from shared.events import (
    ALL_TOPICS,
    Envelope,
)
from shared.ports import DeliveryCallback

logger = logging.getLogger(__name__)

Handler = Callable[[Envelope], None]
# Applies several events at once and returns the ones it refuses for good (event id -> why);
# raising instead means the whole batch failed (see shared.consuming.ConsumerRunner).
BatchHandler = Callable[[Sequence[Envelope]], Mapping[str, BaseException]]

EVENTS_PUBLISHED = Counter("events_published_total", "Events delivered to Kafka", ["topic", "outcome"])


class Gate(Protocol):
    """Says when events of some types may be taken in; the rest of a consumer's topics flow on."""

    event_types: frozenset[str]

    def is_open(self) -> bool:
        """Whether events of ``event_types`` may be consumed now (called before every poll)."""

    def admitted(self, count: int) -> None:
        """``count`` more such events were handled."""


class PublishError(Exception):
    """Kafka did not accept an event."""


class PermanentError(Exception):
    """A handler's way to say retrying this event cannot help: dead-letter it now."""


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap.servers": kafka.bootstrap_servers, "security.protocol": kafka.security_protocol}


def make_producer(kafka: KafkaSettings, client_id: str) -> Producer:
    """Create a reliable producer: every in-sync replica acknowledges, retries never duplicate."""
    return Producer(
        {
            **client_config(kafka),
            "client.id": client_id,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": kafka.linger_ms,
            "delivery.timeout.ms": kafka.delivery_timeout_ms,
            "compression.type": "lz4",
        }
    )


def make_publisher(kafka: KafkaSettings, client_id: str) -> KafkaPublisher:
    """Create a publisher writing to the configured (prefixed) topics."""
    return KafkaPublisher(make_producer(kafka, client_id), kafka.topic_prefix)


def make_consumer(kafka: KafkaSettings, group_id: str, client_id: str) -> Consumer:
    """Create a group consumer whose offsets are stored only after a handler succeeded."""
    return Consumer(
        {
            **client_config(kafka),
            "group.id": group_id,
            "client.id": client_id,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": kafka.session_timeout_ms,
            "max.poll.interval.ms": kafka.max_poll_interval_ms,
            # Bound the prefetch (librdkafka's defaults, 100,000 messages per partition or 64 MB,
            # fill up in a backlog and stay in the process): fetching stops at whichever of
            # 1,000 messages per partition or consumer_queue_kb comes first.
            "queued.max.messages.kbytes": kafka.consumer_queue_kb,
            "queued.min.messages": 1000,
        }
    )


def topic_name(kafka: KafkaSettings, topic: str) -> str:
    """The broker-side name of a contract topic (with the configured prefix)."""
    return kafka.topic_prefix + topic


class KafkaPublisher:
    """Publish envelopes keyed by order id; delivery failures reach the caller, never only a log."""

    def __init__(self, producer: Producer, topic_prefix: str = "") -> None:
        self._producer = producer
        self.topic_prefix = topic_prefix

    def publish(self, event: Envelope, on_delivery: DeliveryCallback | None = None) -> None:
        def report(err: KafkaError | None, msg: Message) -> None:
            EVENTS_PUBLISHED.labels(event.topic, "error" if err else "ok").inc()
            if err:
                logger.error("delivery of %s to %s failed: %s", event.event_type, event.topic, err)
            if on_delivery:
                on_delivery(PublishError(str(err)) if err else None)

        self.produce(self.topic_prefix + event.topic, event.key, event.to_json(), on_delivery=report)

    def publish_sync(self, event: Envelope, timeout: float = 30.0) -> None:
        """Publish ``event`` and wait for the broker's acknowledgement."""
        self.produce_sync(self.topic_prefix + event.topic, event.key, event.to_json(), timeout=timeout)

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """Queue one raw message; on a full local queue wait once for room, then give up."""
        for attempt in (1, 2):
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError as err:
                if attempt == 2:
                    raise PublishError(f"producer queue is full: {err}") from err
                self._producer.poll(1)
            except KafkaException as err:
                raise PublishError(str(err)) from err
        self._producer.poll(0)

    def produce_sync(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        timeout: float = 30.0,
        abort: threading.Event | None = None,
    ) -> None:
        """Send one message and wait for the broker's acknowledgement (or for ``abort``)."""
        outcome: list[KafkaError | None] = []
        self.produce(topic, key, value, headers, on_delivery=lambda err, _msg: outcome.append(err))
        deadline = time.monotonic() + timeout
        while not outcome and time.monotonic() < deadline and not (abort and abort.is_set()):
            self._producer.poll(0.1)
        if not outcome:
            raise PublishError(f"no acknowledgement from Kafka for {topic} within {timeout:.0f}s")
        if outcome[0] is not None:
            raise PublishError(f"Kafka rejected a message for {topic}: {outcome[0]}")

    def poll(self, timeout: float) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return self._producer.flush(timeout)


def ensure_topics(kafka: KafkaSettings, topics: Iterable[str] = ALL_TOPICS, timeout: float = 30.0) -> list[str]:
    """Create the topics that are missing; return the names created (idempotent)."""
    admin = AdminClient(client_config(kafka))
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [name for name in (topic_name(kafka, t) for t in topics) if name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(t, num_partitions=kafka.topic_partitions, replication_factor=kafka.replication_factor)
            for t in missing
        ],
        operation_timeout=timeout,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result()
            created.append(topic)
        except KafkaException as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def delete_topics(kafka: KafkaSettings, timeout: float = 30.0) -> list[str]:
    """Delete every topic under the configured prefix (a test run's own); refuse without a prefix."""
    if not kafka.topic_prefix:
        raise ValueError("refusing to delete topics without a topic prefix")
    admin = AdminClient(client_config(kafka))
    doomed = [t for t in admin.list_topics(timeout=timeout).topics if t.startswith(kafka.topic_prefix)]
    for future in admin.delete_topics(doomed, operation_timeout=timeout).values() if doomed else ():
        future.result()
    return doomed


def consumer_lag(kafka: KafkaSettings, group_ids: Iterable[str], timeout: float = 5.0) -> dict[str, int]:
    """Return the total lag (latest offset minus committed offset) of each consumer group.

    Only this environment's topics count: a group keeps committed offsets of topics it no longer
    reads (another prefix, a retired topic), and those would show as lag for ever.
    """
    admin = AdminClient(client_config(kafka))
    groups = list(group_ids)
    ours = {topic_name(kafka, topic) for topic in ALL_TOPICS}
    committed: dict[str, list[TopicPartition]] = {}
    for group in groups:
        future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
        partitions = future.result(timeout).topic_partitions
        committed[group] = [tp for tp in partitions if tp.offset >= 0 and tp.topic in ours]
    wanted = {TopicPartition(tp.topic, tp.partition) for tps in committed.values() for tp in tps}
    latest: dict[tuple[str, int], int] = {}
    if wanted:
        futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in wanted}, request_timeout=timeout)
        for tp, future in futures.items():
            latest[(tp.topic, tp.partition)] = future.result(timeout).offset
    return {
        group: sum(max(0, latest.get((tp.topic, tp.partition), tp.offset) - tp.offset) for tp in tps)
        for group, tps in committed.items()
    }


def bind_handlers(handlers: Mapping[str, Callable[[Any, Envelope], None]], service: Any) -> dict[str, Handler]:
    """Give each ``handler(service, event)`` of a service's HANDLERS table its service."""
    return {event_type: functools.partial(handler, service) for event_type, handler in handlers.items()}
