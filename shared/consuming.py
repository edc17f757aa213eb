"""The consumer runner: a fetch loop, the retry and dead-letter policy it applies events by, and
the gate that paces some event types. Producers, topics and the handler types are in kafka_utils."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Histogram

from shared.config import ConsumerSettings
from shared.events import (
    DEAD_LETTER_TOPIC,
    TOPIC_BY_EVENT,
    Envelope,
    InvalidEvent,
    redact_payload,
    scrub_card_numbers,
)
from shared.kafka_utils import BatchHandler, Gate, Handler, KafkaPublisher, PermanentError, PublishError
from shared.logs import log_context
from shared.ports import Inbox

logger = logging.getLogger(__name__)

EVENTS_CONSUMED = Counter("events_consumed_total", "Events taken from Kafka by outcome", ["group", "topic", "outcome"])
HANDLER_SECONDS = Histogram("event_handler_seconds", "Time spent handling one event", ["group", "topic"])
BATCH_SECONDS = Histogram("event_batch_seconds", "Time spent handling one batch of events", ["group"])
BATCH_SIZE = Histogram(
    "event_batch_size", "Events handled together in one batch", ["group"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500)
)


def _never(_err: BaseException) -> bool:
    return False


@dataclass(frozen=True)
class ConsumerOptions:
    """Who a runner consumes as and how it retries, batches and lingers."""

    service: str
    group_id: str
    # max_attempts, backoff_base_s, backoff_max_s and max_batch (the consumer section of the config).
    retry: ConsumerSettings
    # How long a batch waits, after its first event, for more (ConsumerSettings.linger_s(service)).
    linger_s: float = 0.0
    # Errors that say the infrastructure is down, not the event at fault: retried until they pass.
    is_transient: Callable[[BaseException], bool] = _never


class DeadLetterer:
    """Copy messages to the dead-letter topic, with headers saying where they came from and why."""

    def __init__(self, publisher: KafkaPublisher, options: ConsumerOptions, stop: threading.Event) -> None:
        self._publisher = publisher
        self._options = options
        self._stop = stop
        self._topic = publisher.topic_prefix + DEAD_LETTER_TOPIC

    def send(self, msg: Message, err: BaseException, attempts: int) -> str:
        """Dead-letter ``msg``; return dead_lettered, or interrupted by a stop."""
        # Dead letters are kept and shown to people: no card number goes in, not even in the error.
        error = scrub_card_numbers(f"{type(err).__name__}: {err}")[:1000]
        headers = [
            ("original_topic", msg.topic().encode()),
            ("original_partition", str(msg.partition()).encode()),
            ("original_offset", str(msg.offset()).encode()),
            ("error", error.encode()),
            ("attempts", str(attempts).encode()),
            ("service", self._options.service.encode()),
            ("consumer_group", self._options.group_id.encode()),
        ]
        logger.error("dead-lettering %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), error)
        # The offset is stored only after the dead letter is acknowledged, so it is never lost;
        # a stop meanwhile leaves the offset where it is and the message is handled again later.
        value = redact_payload(msg.value())
        while not self._stop.is_set():
            try:
                self._publisher.produce_sync(self._topic, msg.key(), value, headers, abort=self._stop)
                return "dead_lettered"
            except PublishError as publish_err:
                logger.error("could not dead-letter, retrying: %s", publish_err)
                self._stop.wait(self._options.retry.backoff_max_s or 1.0)
        return "interrupted"


class RetryPolicy:
    """Apply events with bounded retries, waiting out outages, and dead-letter those that keep failing.

    Every outcome (handled, duplicate, dead_lettered, interrupted) goes through ``count``.
    """

    def __init__(
        self,
        options: ConsumerOptions,
        dead_letters: DeadLetterer,
        stop: threading.Event,
        count: Callable[[str, str], str],
        inbox: Inbox | None = None,
    ) -> None:
        self._options = options
        self._retry = options.retry
        self._dead_letters = dead_letters
        self._stop = stop
        self._count = count
        self._inbox = inbox

    def apply(self, msg: Message, event: Envelope, handler: Handler) -> str:
        """Handle one event; return handled, duplicate, dead_lettered or interrupted."""
        attempts = 0
        while True:
            attempts += 1
            try:
                if self._inbox and self._inbox.seen(event.event_id):
                    return "duplicate"
                with HANDLER_SECONDS.labels(self._options.group_id, msg.topic()).time():
                    handler(event)
                if self._inbox:
                    self._inbox.mark(event.event_id)
                return "handled"
            except PermanentError as err:
                logger.warning("%s rejected permanently: %s", event.event_type, scrub_card_numbers(str(err)))
                return self._dead_letters.send(msg, err, attempts)
            except Exception as err:
                if self._options.is_transient(err):
                    attempts -= 1  # an outage is not the event's fault; wait it out
                    logger.warning("transient failure handling %s, will retry: %s", event.event_type, err)
                elif attempts >= self._retry.max_attempts:
                    logger.exception("giving up on %s after %d attempts", event.event_type, attempts)
                    return self._dead_letters.send(msg, err, attempts)
                else:
                    logger.warning(
                        "attempt %d of %s failed: %s", attempts, event.event_type, scrub_card_numbers(str(err))
                    )
                delay = min(self._retry.backoff_max_s, self._retry.backoff_base_s * 2 ** max(0, attempts - 1))
                if self._stop.wait(delay):
                    return "interrupted"

    def apply_batch(
        self,
        batch_handler: BatchHandler,
        ready: list[tuple[Message, Envelope]],
        one_by_one: Callable[[Message], str],
    ) -> bool:
        """Handle events together, waiting out outages; on another failure, each by ``one_by_one``.

        Return False when a stop interrupted them (their offsets must not be stored).
        """
        group = self._options.group_id
        BATCH_SIZE.labels(group).observe(len(ready))
        delay = self._retry.backoff_base_s
        while True:
            try:
                with BATCH_SECONDS.labels(group).time():
                    refused = batch_handler([event for _msg, event in ready])
                break
            except Exception as err:
                if not self._options.is_transient(err):
                    logger.warning("a batch of %d events failed (%s); handling them one at a time", len(ready), err)
                    return all(one_by_one(msg) != "interrupted" for msg, _event in ready)
                logger.warning("transient failure handling a batch of %d events, will retry: %s", len(ready), err)
                if self._stop.wait(delay):
                    return False
                delay = min(self._retry.backoff_max_s, delay * 2)
        for msg, event in ready:
            error = refused.get(event.event_id)
            if error is not None:
                logger.warning("%s refused: %s", event.event_type, scrub_card_numbers(str(error)))
            outcome = self._dead_letters.send(msg, error, attempts=1) if error is not None else "handled"
            if self._count(msg.topic(), outcome) == "interrupted":
                return False
        return True


class GateFollower:
    """Pause the gated event types' partitions while the gate is closed; resume them when it opens.

    librdkafka drops what it fetched of a paused partition and resumes from the next unconsumed
    offset, so the consumer takes in new work only at the pace the gate allows while events of
    its other topics (replies to work in progress) keep flowing.
    """

    def __init__(self, gate: Gate, topics: set[str]) -> None:
        self._gate = gate
        self.topics = topics
        self._closed = False
        self._reassigned = False  # set by a rebalance (inside poll): new partitions come unpaused

    def follow(self, consumer: Consumer) -> None:
        """Pause or resume the gated partitions when the gate or the assignment changed."""
        closed = not self._gate.is_open()
        if closed == self._closed and not self._reassigned:
            return
        self._reassigned = False
        gated = [p for p in consumer.assignment() if p.topic in self.topics]
        if gated:
            (consumer.pause if closed else consumer.resume)(gated)
        if closed != self._closed:
            logger.info("%s %s", "pausing" if closed else "resuming", ", ".join(sorted(self.topics)))
        self._closed = closed

    def assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take a new assignment, paused at once where the gate is closed."""
        gated = [p for p in partitions if p.topic in self.topics]
        if gated and self._closed:
            # Take the assignment here and pause at once, so the poll that brought the rebalance
            # cannot return an event the gate is holding back.
            consumer.assign(partitions)
            consumer.pause(gated)
        self._reassigned = True

    def handled(self, topic: str) -> None:
        """One event of ``topic`` was handled: tell the gate if it is one of its own."""
        if topic in self.topics:
            self._gate.admitted(1)


class ConsumerRunner:
    """Consume the topics of the registered event types and apply each event at least once.

    An event that cannot be parsed, or whose handler keeps failing, goes to the dead-letter
    topic (DeadLetterer) and the runner moves on. Errors that ``options.is_transient`` accepts
    (a database outage, say) are retried until they pass, because dead-lettering them would drop
    good events (RetryPolicy).

    With a ``batch_handler``, every message already fetched (up to ``retry.max_batch``) is
    handled in one call, so a handler can write them in a few bulk round trips; the offsets are
    stored only after the call returns. With ``linger_s``, the runner first waits that long after
    the first message for more to come (as a producer's linger.ms does), so that batches hold
    many events at a steady rate too, not only in a backlog. A batch that fails for a reason
    other than an outage is handled again one event at a time by ``handlers``, which finds the
    event at fault.

    With a ``gate``, the gated event types' topics are paused while it is closed (GateFollower).
    """

    def __init__(
        self,
        consumer: Consumer,
        publisher: KafkaPublisher,
        handlers: Mapping[str, Handler],
        options: ConsumerOptions,
        *,
        inbox: Inbox | None = None,
        batch_handler: BatchHandler | None = None,
        gate: Gate | None = None,
        on_idle: Callable[[], None] | None = None,
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
        self._options = options
        self._group = options.group_id
        self._on_idle = on_idle
        self._batch_handler = batch_handler
        self._max_batch = options.retry.max_batch
        self._stop = threading.Event()
        self._prefix = publisher.topic_prefix
        self.topics = sorted({self._prefix + TOPIC_BY_EVENT[t] for t in handlers})
        self._dead_letters = DeadLetterer(publisher, options, self._stop)
        self._policy = RetryPolicy(options, self._dead_letters, self._stop, self._count, inbox)
        self._gate = GateFollower(gate, {self._prefix + TOPIC_BY_EVENT[t] for t in gate.event_types}) if gate else None

    def stop(self, *_args: object) -> None:
        self._stop.set()

    def run(self, install_signal_handlers: bool = True) -> None:
        """Poll until stopped (SIGTERM/SIGINT or ``stop()``); always close the consumer."""
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        logger.info("consuming %s as group %s", ", ".join(self.topics), self._group)
        try:
            while not self._stop.is_set():
                if self._gate is not None:
                    self._gate.follow(self._consumer)
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
            return self._count(msg.topic(), self._policy.apply(msg, event, self._handlers[event.event_type]))

    def _gather(self, first: Message) -> list[Message]:
        """``first`` and what is already fetched; then, for up to ``linger_s``, what comes next."""
        batch = [first, *self._consumer.consume(self._max_batch - 1, 0)]
        deadline = time.monotonic() + self._options.linger_s
        while len(batch) < self._max_batch and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            batch.extend(self._consumer.consume(self._max_batch - len(batch), remaining))
        return batch

    def _run_batch(self, msgs: list[Message]) -> None:
        """Handle fetched messages together; store their offsets unless a stop interrupted them."""
        assert self._batch_handler is not None
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
        if ready and not self._policy.apply_batch(self._batch_handler, ready, self.process):
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
            return self._count(topic, self._dead_letters.send(msg, err, attempts=1))
        if event.event_type not in self._handlers:
            return self._count(topic, "ignored")
        return event

    def _store(self, msg: Message) -> None:
        try:
            self._consumer.store_offsets(message=msg)
        except KafkaException as err:
            # The partition was revoked meanwhile; its new owner re-reads the event.
            logger.warning("could not store offset for %s[%d]: %s", msg.topic(), msg.partition(), err)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._gate is not None:
            self._gate.assigned(consumer, partitions)

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
        if self._gate is not None and outcome == "handled":
            self._gate.handled(topic)
        return outcome
