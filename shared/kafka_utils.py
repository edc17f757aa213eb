"""Kafka plumbing for every service: producer, publisher, topic admin and the consumer runner."""

from __future__ import annotations

import functools
import logging
import signal
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
from prometheus_client import Counter, Histogram

from shared.config import ConsumerSettings, KafkaSettings
from shared.events import (
    ALL_TOPICS,
    DEAD_LETTER_TOPIC,
    TOPIC_BY_EVENT,
    Envelope,
    InvalidEvent,
    redact_payload,
    scrub_card_numbers,
)
from shared.logs import log_context
from shared.ports import DeliveryCallback, Inbox

logger = logging.getLogger(__name__)

Handler = Callable[[Envelope], None]
# Applies several events at once and returns the ones it refuses for good (event id -> why);
# raising instead means the whole batch failed (see ConsumerRunner).
BatchHandler = Callable[[Sequence[Envelope]], Mapping[str, BaseException]]

EVENTS_PUBLISHED = Counter("events_published_total", "Events delivered to Kafka", ["topic", "outcome"])
EVENTS_CONSUMED = Counter("events_consumed_total", "Events taken from Kafka by outcome", ["group", "topic", "outcome"])
HANDLER_SECONDS = Histogram("event_handler_seconds", "Time spent handling one event", ["group", "topic"])
BATCH_SECONDS = Histogram("event_batch_seconds", "Time spent handling one batch of events", ["group"])
BATCH_SIZE = Histogram(
    "event_batch_size", "Events handled together in one batch", ["group"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500)
)


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


class ConsumerRunner:
    """Consume the topics of the registered event types and apply each event at least once.

    An event that cannot be parsed, or whose handler keeps failing, goes to the dead-letter
    topic with headers saying where it came from and why; the runner then moves on.
    Errors that ``is_transient`` accepts (a database outage, say) are retried until they pass,
    because dead-lettering them would drop good events.

    With a ``batch_handler``, every message already fetched (up to ``retry.max_batch``) is handled in
    one call, so a handler can write them in a few bulk round trips; the offsets are stored
    only after the call returns. With ``linger_s``, the runner first waits that long after the
    first message for more to come (as a producer's linger.ms does), so that batches hold many
    events at a steady rate too, not only in a backlog. A batch that fails for a reason other
    than an outage is handled again one event at a time by ``handlers``, which finds the event
    at fault.

    With a ``gate``, the partitions of the gated event types' topics are paused while it is
    closed (librdkafka drops what it fetched of them and resumes from the next unconsumed
    offset), so the consumer takes in new work only at the pace the gate allows while events
    of its other topics (replies to work in progress) keep flowing.
    """

    def __init__(
        self,
        consumer: Consumer,
        publisher: KafkaPublisher,
        handlers: Mapping[str, Handler],
        *,
        service: str,
        group_id: str,
        retry: ConsumerSettings,
        inbox: Inbox | None = None,
        is_transient: Callable[[BaseException], bool] = lambda _err: False,
        on_idle: Callable[[], None] | None = None,
        batch_handler: BatchHandler | None = None,
        linger_s: float = 0.0,
        gate: Gate | None = None,
    ) -> None:
        unknown = set(handlers) - set(TOPIC_BY_EVENT)
        if unknown:
            raise ValueError(f"handlers for unknown event types: {sorted(unknown)}")
        ungated = set(gate.event_types) - set(handlers) if gate else set()
        if ungated:
            raise ValueError(f"the gate names event types without a handler: {sorted(ungated)}")
        if inbox is not None and batch_handler is not None:
            raise ValueError("a batch handler must be idempotent by itself: it cannot use the inbox")
        self._consumer = consumer
        self._publisher = publisher
        self._handlers = dict(handlers)
        self._service = service
        self._group = group_id
        self._retry = retry
        self._inbox = inbox
        self._is_transient = is_transient
        self._on_idle = on_idle
        self._batch_handler = batch_handler
        self._max_batch = retry.max_batch
        self._linger_s = linger_s
        self._stop = threading.Event()
        self._prefix = publisher.topic_prefix
        self.topics = sorted({self._prefix + TOPIC_BY_EVENT[t] for t in handlers})
        self._gate = gate
        self._gated_topics = {self._prefix + TOPIC_BY_EVENT[t] for t in gate.event_types} if gate else set()
        self._gate_closed = False
        self._reassigned = False  # set by a rebalance (inside poll): new partitions come unpaused

    def stop(self, *_args: object) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, install_signal_handlers: bool = True) -> None:
        """Poll until stopped (SIGTERM/SIGINT or ``stop()``); always close the consumer."""
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        logger.info("consuming %s as group %s", ", ".join(self.topics), self._group)
        try:
            while not self._stop.is_set():
                self._follow_gate()
                msg = self._consumer.poll(0.5)
                if msg is None:
                    if self._on_idle:
                        self._on_idle()
                    continue
                if self._batch_handler is not None:
                    self._run_batch(self._gather(msg))
                    continue
                if msg.error():
                    self._on_error(msg.error())
                    continue
                if self.process(msg) != "interrupted":
                    self._store(msg)
        finally:
            self._consumer.close()
            self._publisher.flush(3)  # dead letters in flight; shutdown must fit docker's 10 s grace
            logger.info("consumer %s closed", self._group)

    def process(self, msg: Message) -> str:
        """Handle one message; return handled, duplicate, ignored, dead_lettered or interrupted."""
        event = self._decode(msg)
        if not isinstance(event, Envelope):
            return event
        with log_context(order_id=event.order_id, correlation_id=event.correlation_id, event=event.event_type):
            return self._count(msg.topic(), self._apply(msg, event, self._handlers[event.event_type]))

    def _gather(self, first: Message) -> list[Message]:
        """``first`` and what is already fetched; then, for up to ``linger_s``, what comes next."""
        batch = [first, *self._consumer.consume(self._max_batch - 1, 0)]
        deadline = time.monotonic() + self._linger_s
        while len(batch) < self._max_batch and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            batch.extend(self._consumer.consume(self._max_batch - len(batch), remaining))
        return batch

    def _run_batch(self, msgs: list[Message]) -> None:
        """Handle fetched messages together; store their offsets unless a stop interrupted them."""
        fetched: list[Message] = []
        ready: list[tuple[Message, Envelope]] = []
        for msg in msgs:
            if msg.error():
                self._on_error(msg.error())
                continue
            fetched.append(msg)
            event = self._decode(msg)
            if event == "interrupted":
                return
            if isinstance(event, Envelope):
                ready.append((msg, event))
        if ready and not self._apply_batch(ready):
            return
        for msg in fetched:
            self._store(msg)

    def _decode(self, msg: Message) -> Envelope | str:
        """The message's event if a handler wants it; otherwise how it was dealt with."""
        topic = msg.topic()
        try:
            event = Envelope.from_json(msg.value())
            if self._prefix + event.topic != topic:
                raise InvalidEvent(f"event type {event.event_type} does not belong on topic {topic}")
        except InvalidEvent as err:
            return self._count(topic, self._dead_letter(msg, err, attempts=1))
        if event.event_type not in self._handlers:
            return self._count(topic, "ignored")
        return event

    def _apply_batch(self, ready: list[tuple[Message, Envelope]]) -> bool:
        assert self._batch_handler is not None
        BATCH_SIZE.labels(self._group).observe(len(ready))
        delay = self._retry.backoff_base_s
        while True:
            try:
                with BATCH_SECONDS.labels(self._group).time():
                    refused = self._batch_handler([event for _msg, event in ready])
                break
            except Exception as err:
                if not self._is_transient(err):
                    logger.warning("a batch of %d events failed (%s); handling them one at a time", len(ready), err)
                    return all(self.process(msg) != "interrupted" for msg, _event in ready)
                logger.warning("transient failure handling a batch of %d events, will retry: %s", len(ready), err)
                if self._stop.wait(delay):
                    return False
                delay = min(self._retry.backoff_max_s, delay * 2)
        for msg, event in ready:
            error = refused.get(event.event_id)
            if error is not None:
                logger.warning("%s refused: %s", event.event_type, scrub_card_numbers(str(error)))
            outcome = self._dead_letter(msg, error, attempts=1) if error is not None else "handled"
            if self._count(msg.topic(), outcome) == "interrupted":
                return False
        return True

    def _apply(self, msg: Message, event: Envelope, handler: Handler) -> str:
        attempts = 0
        while True:
            attempts += 1
            try:
                if self._inbox and self._inbox.seen(event.event_id):
                    return "duplicate"
                with HANDLER_SECONDS.labels(self._group, msg.topic()).time():
                    handler(event)
                if self._inbox:
                    self._inbox.mark(event.event_id)
                return "handled"
            except PermanentError as err:
                logger.warning("%s rejected permanently: %s", event.event_type, scrub_card_numbers(str(err)))
                return self._dead_letter(msg, err, attempts)
            except Exception as err:
                if self._is_transient(err):
                    attempts -= 1  # an outage is not the event's fault; wait it out
                    logger.warning("transient failure handling %s, will retry: %s", event.event_type, err)
                elif attempts >= self._retry.max_attempts:
                    logger.exception("giving up on %s after %d attempts", event.event_type, attempts)
                    return self._dead_letter(msg, err, attempts)
                else:
                    logger.warning(
                        "attempt %d of %s failed: %s", attempts, event.event_type, scrub_card_numbers(str(err))
                    )
                delay = min(self._retry.backoff_max_s, self._retry.backoff_base_s * 2 ** max(0, attempts - 1))
                if self._stop.wait(delay):
                    return "interrupted"

    def _dead_letter(self, msg: Message, err: BaseException, attempts: int) -> str:
        """Copy the message to the dead-letter topic; return dead_lettered, or interrupted by a stop."""
        # Dead letters are kept and shown to people: no card number goes in, not even in the error.
        error = scrub_card_numbers(f"{type(err).__name__}: {err}")[:1000]
        headers = [
            ("original_topic", msg.topic().encode()),
            ("original_partition", str(msg.partition()).encode()),
            ("original_offset", str(msg.offset()).encode()),
            ("error", error.encode()),
            ("attempts", str(attempts).encode()),
            ("service", self._service.encode()),
            ("consumer_group", self._group.encode()),
        ]
        logger.error("dead-lettering %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), error)
        # The offset is stored only after the dead letter is acknowledged, so it is never lost;
        # a stop meanwhile leaves the offset where it is and the message is handled again later.
        value = redact_payload(msg.value())
        while not self._stop.is_set():
            try:
                topic = self._prefix + DEAD_LETTER_TOPIC
                self._publisher.produce_sync(topic, msg.key(), value, headers, abort=self._stop)
                return "dead_lettered"
            except PublishError as publish_err:
                logger.error("could not dead-letter, retrying: %s", publish_err)
                self._stop.wait(self._retry.backoff_max_s or 1.0)
        return "interrupted"

    def _store(self, msg: Message) -> None:
        try:
            self._consumer.store_offsets(message=msg)
        except KafkaException as err:
            # The partition was revoked meanwhile; its new owner re-reads the event.
            logger.warning("could not store offset for %s[%d]: %s", msg.topic(), msg.partition(), err)

    def _follow_gate(self) -> None:
        """Pause or resume the gated topics' partitions when the gate or the assignment changed."""
        if self._gate is None:
            return
        closed = not self._gate.is_open()
        if closed == self._gate_closed and not self._reassigned:
            return
        self._reassigned = False
        gated = [p for p in self._consumer.assignment() if p.topic in self._gated_topics]
        if gated:
            (self._consumer.pause if closed else self._consumer.resume)(gated)
        if closed != self._gate_closed:
            logger.info("%s %s", "pausing" if closed else "resuming", ", ".join(sorted(self._gated_topics)))
        self._gate_closed = closed

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gated = [p for p in partitions if p.topic in self._gated_topics]
        if gated and self._gate_closed:
            # Take the assignment here and pause at once, so the poll that brought the rebalance
            # cannot return an event the gate is holding back.
            consumer.assign(partitions)
            consumer.pause(gated)
        self._reassigned = True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as err:
            if err.args[0].code() != KafkaError._NO_OFFSET:
                logger.warning("commit on revoke failed: %s", err)

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise KafkaException(err)
        logger.warning("consumer error (will keep going): %s", err)

    def _count(self, topic: str, outcome: str) -> str:
        EVENTS_CONSUMED.labels(self._group, topic, outcome).inc()
        if self._gate is not None and outcome == "handled" and topic in self._gated_topics:
            self._gate.admitted(1)
        return outcome


def bind_handlers(handlers: Mapping[str, Callable[[Any, Envelope], None]], service: Any) -> dict[str, Handler]:
    """Give each ``handler(service, event)`` of a service's HANDLERS table its service."""
    return {event_type: functools.partial(handler, service) for event_type, handler in handlers.items()}
