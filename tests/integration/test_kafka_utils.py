"""kafka_utils against the real broker: groups, resume, retries, dead letters, the inbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from confluent_kafka import Consumer, TopicPartition

from shared.config import Settings
from shared.consuming import ConsumerOptions, ConsumerRunner
from shared.events import DEAD_LETTER_TOPIC, Envelope
from shared.kafka_utils import (
    KafkaPublisher,
    consumer_lag,
    delete_topics,
    ensure_topics,
    make_consumer,
    make_publisher,
    topic_name,
)
from shared.mongo import MongoInbox
from tests.integration.harness import isolated

EVENT_TYPE = "NotificationSent"  # a topic no other integration test's handler writes state from


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def publisher(live_settings: Settings) -> Iterator[KafkaPublisher]:
    publisher = make_publisher(live_settings.kafka, "test-publisher")
    yield publisher
    publisher.flush(10)


class Recorder:
    """A handler that remembers the events of the orders it is told to watch."""

    def __init__(self, order_ids: set[str], fail: Callable[[Envelope], bool] = lambda _e: False) -> None:
        self.order_ids = order_ids
        self.fail = fail
        self.seen: list[Envelope] = []
        self.calls = 0

    def __call__(self, event: Envelope) -> None:
        if event.order_id not in self.order_ids:
            return
        self.calls += 1
        if self.fail(event):
            raise RuntimeError(f"handler refuses {event.order_id}")
        self.seen.append(event)


class BatchRecorder:
    """A batch handler that remembers the batches of watched orders; it may refuse or fail some."""

    def __init__(
        self,
        order_ids: set[str],
        refuse: Callable[[Envelope], bool] = lambda _e: False,
        fail: Callable[[Envelope], bool] = lambda _e: False,
    ) -> None:
        self.order_ids = order_ids
        self.refuse = refuse
        self.fail = fail
        self.batches: list[list[Envelope]] = []

    def __call__(self, events: Sequence[Envelope]) -> dict[str, BaseException]:
        ours = [e for e in events if e.order_id in self.order_ids]
        if any(self.fail(e) for e in ours):
            raise RuntimeError("this batch holds an event the handler chokes on")
        refused = {e.event_id: ValueError(f"refusing {e.order_id}") for e in ours if self.refuse(e)}
        if ours:
            self.batches.append([e for e in ours if e.event_id not in refused])
        return refused

    @property
    def seen(self) -> list[Envelope]:
        return [e for batch in self.batches for e in batch]


def start_runner(
    settings: Settings,
    publisher: KafkaPublisher,
    group: str,
    handler: Recorder,
    inbox=None,
    batch_handler: BatchRecorder | None = None,
    linger_s: float = 0.0,
):
    runner = ConsumerRunner(
        make_consumer(settings.kafka, group, "test-consumer"),
        publisher,
        {EVENT_TYPE: handler},
        ConsumerOptions("integration-test", group, settings.consumer, linger_s=linger_s),
        inbox=inbox,
        batch_handler=batch_handler,
    )
    thread = threading.Thread(target=runner.run, kwargs={"install_signal_handlers": False}, daemon=True)
    thread.start()
    return runner, thread


def event_for(order_id: str) -> Envelope:
    return Envelope(event_type=EVENT_TYPE, order_id=order_id, source="test", data={"n": 1})


def publish_markers(publisher: KafkaPublisher, events: Sequence[Envelope]) -> set[str]:
    """Publish a fresh copy (new event id, same key) of each event; return their ids.

    A copy lands behind its original in the same partition, and a partition is read in order:
    once a consumer has handled every copy, a redelivery of an original would have come first.
    """
    markers = [Envelope(event_type=e.event_type, order_id=e.order_id, source="test", data={}) for e in events]
    for marker in markers:
        publisher.publish(marker)
    publisher.flush(10)
    return {m.event_id for m in markers}


def handled(handler: Recorder | BatchRecorder, event_ids: set[str]) -> bool:
    return event_ids <= {e.event_id for e in handler.seen}


def test_events_published_with_kafka_utils_reach_a_consumer_group(live_settings, publisher, unique):
    orders = {unique("order") for _ in range(5)}
    handler = Recorder(orders)
    for order_id in orders:
        publisher.publish(event_for(order_id))
    publisher.flush(10)
    runner, thread = start_runner(live_settings, publisher, unique("group"), handler)
    try:
        wait_for(lambda: {e.order_id for e in handler.seen} == orders, what="all five events")
    finally:
        runner.stop()
        thread.join(15)
    assert all(e.topic == "notifications.sent" for e in handler.seen)


def test_a_restarted_consumer_resumes_after_the_events_it_finished(live_settings, publisher, unique):
    group, first, second = unique("group"), unique("order"), unique("order")
    handler = Recorder({first, second})
    first_event = event_for(first)
    publisher.publish(first_event)
    publisher.flush(10)
    runner, thread = start_runner(live_settings, publisher, group, handler)
    wait_for(lambda: len(handler.seen) == 1, what="the first event")
    runner.stop()
    thread.join(15)  # closing the consumer commits the stored offsets

    publisher.publish(event_for(second))
    publisher.flush(10)
    handler_after_restart = Recorder({first, second})
    runner, thread = start_runner(live_settings, publisher, group, handler_after_restart)
    try:
        wait_for(lambda: len(handler_after_restart.seen) == 1, what="the second event")
        markers = publish_markers(publisher, [first_event])
        wait_for(lambda: handled(handler_after_restart, markers), what="the marker behind the first event")
    finally:
        runner.stop()
        thread.join(15)
    assert [e.order_id for e in handler_after_restart.seen if e.event_id not in markers] == [second]


def dead_letters_for(settings: Settings, key: str, group: str, timeout: float = 30) -> list:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic_name(settings.kafka, DEAD_LETTER_TOPIC)])
    found, deadline = [], time.monotonic() + timeout
    try:
        while not found and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and msg.key() == key.encode():
                found.append(msg)
    finally:
        consumer.close()
    return found


def test_a_failing_handler_is_retried_then_dead_lettered_with_headers(live_settings, publisher, unique):
    order_id = unique("poison")
    handler = Recorder({order_id}, fail=lambda _e: True)
    publisher.publish(event_for(order_id))
    publisher.flush(10)
    runner, thread = start_runner(live_settings, publisher, unique("group"), handler)
    try:
        letters = dead_letters_for(live_settings, order_id, unique("dlq-reader"))
    finally:
        runner.stop()
        thread.join(15)
    assert handler.calls == live_settings.consumer.max_attempts
    assert len(letters) == 1
    headers = {k: v.decode() for k, v in letters[0].headers()}
    assert headers["original_topic"] == topic_name(live_settings.kafka, "notifications.sent")
    assert headers["attempts"] == str(live_settings.consumer.max_attempts)
    assert headers["service"] == "integration-test"
    assert "handler refuses" in headers["error"]
    assert {"original_partition", "original_offset"} <= set(headers)
    assert Envelope.from_json(letters[0].value()).order_id == order_id


def test_a_malformed_message_is_dead_lettered_and_the_consumer_goes_on(live_settings, publisher, unique):
    bad_key, good = unique("malformed"), unique("order")
    handler = Recorder({good})
    publisher.produce_sync(
        topic_name(live_settings.kafka, "notifications.sent"), bad_key.encode(), b"{this is not json"
    )
    publisher.publish(event_for(good))
    publisher.flush(10)
    runner, thread = start_runner(live_settings, publisher, unique("group"), handler)
    try:
        wait_for(lambda: len(handler.seen) == 1, what="the good event after the bad one")
        letters = dead_letters_for(live_settings, bad_key, unique("dlq-reader"))
    finally:
        runner.stop()
        thread.join(15)
    assert len(letters) == 1
    headers = {k: v.decode() for k, v in letters[0].headers()}
    assert headers["attempts"] == "1"
    assert "not valid JSON" in headers["error"]


def test_a_batch_handler_gets_the_backlog_together_and_the_group_resumes_after_it(live_settings, publisher, unique):
    group, backlog, later = unique("group"), [unique("order") for _ in range(30)], unique("order")
    backlog_events = [event_for(order_id) for order_id in backlog]
    for event in backlog_events:
        publisher.publish(event)
    publisher.flush(10)
    handler = BatchRecorder({*backlog, later})
    runner, thread = start_runner(live_settings, publisher, group, Recorder(set()), batch_handler=handler)
    try:
        wait_for(lambda: len(handler.seen) == 30, what="the backlog")
    finally:
        runner.stop()
        thread.join(15)
    assert sorted(e.order_id for e in handler.seen) == sorted(backlog)
    assert max(len(batch) for batch in handler.batches) > 1  # fetched together, handled together

    publisher.publish(event_for(later))
    publisher.flush(10)
    after_restart = BatchRecorder({*backlog, later})
    runner, thread = start_runner(live_settings, publisher, group, Recorder(set()), batch_handler=after_restart)
    try:
        wait_for(lambda: after_restart.seen, what="the event published after the restart")
        markers = publish_markers(publisher, backlog_events)
        wait_for(lambda: handled(after_restart, markers), what="the markers behind the backlog")
    finally:
        runner.stop()
        thread.join(15)
    assert [e.order_id for e in after_restart.seen if e.event_id not in markers] == [later]


@pytest.mark.parametrize(("linger_s", "batches"), [(2.0, [4]), (0.0, [1, 1, 1, 1])])
def test_a_lingering_runner_gathers_events_that_come_one_by_one(live_settings, unique, linger_s, batches):
    # Topics of its own: on the shared test topics a new group first works off every earlier run's
    # events, and the spaced events would then pile up behind that backlog and come as one batch.
    with isolated("linger") as env:
        settings = env.settings("order")
        publisher = make_publisher(settings.kafka, "linger-publisher")
        _linger_run(settings, publisher, unique, linger_s, batches)


def _linger_run(settings, publisher, unique, linger_s, batches):
    warm_up, spaced = unique("order"), [unique("order") for _ in range(4)]
    handler = BatchRecorder({warm_up, *spaced})
    runner, thread = start_runner(
        settings, publisher, unique("group"), Recorder(set()), batch_handler=handler, linger_s=linger_s
    )
    try:
        publisher.publish(event_for(warm_up))
        publisher.flush(10)
        wait_for(lambda: handler.seen, what="the warm-up event")  # assigned, caught up and idle
        for order_id in spaced:
            publisher.publish(event_for(order_id))
            publisher.flush(10)
            time.sleep(0.2)  # the spacing is the input under test: events that come one by one
        wait_for(lambda: len(handler.seen) == 5, what="the spaced events")
    finally:
        runner.stop()
        thread.join(15)
    assert [len(batch) for batch in handler.batches[1:]] == batches
    # Each order is keyed to its own partition, and Kafka orders events within a partition only.
    assert sorted(e.order_id for e in handler.seen[1:]) == sorted(spaced)


def test_an_event_a_batch_handler_refuses_is_dead_lettered_and_the_rest_handled(live_settings, publisher, unique):
    bad, good = unique("refused"), unique("order")
    for order_id in (bad, good):
        publisher.publish(event_for(order_id))
    publisher.flush(10)
    handler = BatchRecorder({bad, good}, refuse=lambda e: e.order_id == bad)
    runner, thread = start_runner(live_settings, publisher, unique("group"), Recorder(set()), batch_handler=handler)
    try:
        wait_for(lambda: handler.seen, what="the good event")
        letters = dead_letters_for(live_settings, bad, unique("dlq-reader"))
    finally:
        runner.stop()
        thread.join(15)
    assert [e.order_id for e in handler.seen] == [good]
    assert len(letters) == 1
    assert "refusing" in dict(letters[0].headers())["error"].decode()


def test_a_failing_batch_is_handled_again_one_event_at_a_time(live_settings, publisher, unique):
    poison, fine = unique("poison"), [unique("order") for _ in range(3)]
    for order_id in [*fine, poison]:
        publisher.publish(event_for(order_id))
    publisher.flush(10)
    single = Recorder({poison, *fine}, fail=lambda e: e.order_id == poison)
    batch = BatchRecorder({poison, *fine}, fail=lambda e: e.order_id == poison)
    runner, thread = start_runner(live_settings, publisher, unique("group"), single, batch_handler=batch)
    try:
        letters = dead_letters_for(live_settings, poison, unique("dlq-reader"))
        wait_for(lambda: {e.order_id for e in single.seen + batch.seen} >= set(fine), what="the good events")
    finally:
        runner.stop()
        thread.join(15)
    assert len(letters) == 1  # the culprit, found by the one-at-a-time pass
    assert single.calls - len(single.seen) == live_settings.consumer.max_attempts


def test_a_redelivered_event_is_applied_once_thanks_to_the_inbox(live_settings, publisher, mongo_db, unique):
    order_id, group = unique("order"), unique("group")
    handler = Recorder({order_id})
    event = event_for(order_id)
    publisher.publish(event)
    publisher.publish(event)  # the same event id twice, as after a producer retry or a replay
    markers = publish_markers(publisher, [event])  # behind both copies
    runner, thread = start_runner(
        live_settings, publisher, group, handler, inbox=MongoInbox(mongo_db["processed_events"], group)
    )
    try:
        wait_for(lambda: handled(handler, markers), what="the marker behind the two copies")
    finally:
        runner.stop()
        thread.join(15)
    assert [e.event_id for e in handler.seen if e.event_id not in markers] == [event.event_id]
    assert mongo_db["processed_events"].count_documents({"_id": f"{group}:{event.event_id}"}) == 1


def test_consumer_lag_counts_only_this_environments_topics(live_settings, publisher, unique):
    group = unique("lag-group")
    order_id = unique("order")
    for _ in range(3):
        publisher.publish(event_for(order_id))
    publisher.flush(10)
    ours = topic_name(live_settings.kafka, "notifications.sent")
    other = live_settings.kafka.model_copy(update={"topic_prefix": unique("elsewhere") + "."})
    ensure_topics(other, ["notifications.sent"])
    other_publisher = make_publisher(other, "lag-other")
    other_publisher.publish_sync(event_for(order_id))
    committer = Consumer({"bootstrap.servers": live_settings.kafka.bootstrap_servers, "group.id": group})
    try:
        committer.commit(
            offsets=[TopicPartition(ours, p, 0) for p in range(6)]
            + [TopicPartition(topic_name(other, "notifications.sent"), p, 0) for p in range(6)],
            asynchronous=False,
        )
    finally:
        committer.close()
    lag = consumer_lag(live_settings.kafka, [group])[group]
    admin_view = consumer_lag(other, [group])[group]
    delete_topics(other)
    assert lag >= 3  # everything ever published on our topic is unread by this group
    assert admin_view == 1  # only the other topic's one message: our topic's are not counted there
    idle = unique("never-ran")
    assert consumer_lag(live_settings.kafka, [idle]) == {idle: 0}


class CountingGate:
    """Lets ``limit`` gated events in, then keeps the rest waiting until the limit is raised."""

    event_types = frozenset({"OrderCreated"})

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.let_in = 0
        self.checks = 0  # the runner asks once per polling round

    def is_open(self) -> bool:
        self.checks += 1
        return self.let_in < self.limit

    def wait_rounds(self, rounds: int) -> None:
        """Wait until the runner has polled ``rounds`` more times (each an idle poll of up to 0.5 s)."""
        start = self.checks
        wait_for(lambda: self.checks >= start + rounds, what=f"{rounds} polling rounds")

    def admitted(self, count: int) -> None:
        self.let_in += count


def test_a_closed_gate_keeps_its_events_waiting_while_the_other_topics_flow(live_settings, publisher, unique):
    # Topics of this test's own, so the gate counts only the events published here.
    kafka = live_settings.kafka.model_copy(update={"topic_prefix": unique("gate") + "."})
    ensure_topics(kafka, ["orders.created", "notifications.sent"])
    own_publisher = make_publisher(kafka, "gate-test")
    gated_orders = [unique("order") for _ in range(10)]
    other_orders = [unique("order") for _ in range(3)]
    gated_events = [
        Envelope(event_type="OrderCreated", order_id=order_id, source="test", data={}) for order_id in gated_orders
    ]
    for event in gated_events:
        own_publisher.publish(event)
    for order_id in other_orders:
        own_publisher.publish(event_for(order_id))
    own_publisher.flush(10)
    gate = CountingGate(limit=0)  # closed before the consumer joins: its first assignment is paused
    gated, other = Recorder(set(gated_orders)), Recorder(set(other_orders))
    group = unique("group")
    runner = ConsumerRunner(
        make_consumer(kafka, group, "gate-test"),
        own_publisher,
        {"OrderCreated": gated, EVENT_TYPE: other},
        ConsumerOptions("integration-test", group, live_settings.consumer),
        gate=gate,
    )
    thread = threading.Thread(target=runner.run, kwargs={"install_signal_handlers": False}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(other.seen) == 3, what="the events of the topic without a gate")
        gate.wait_rounds(3)  # polls that would have fetched the gated events, were they not paused
        assert gated.seen == []
        gate.limit = 3
        wait_for(lambda: len(gated.seen) >= 3, what="the first gated events")
        gate.wait_rounds(4)  # polls that would let events the gate holds back through
        assert len(gated.seen) == 3
        gate.limit = 100
        wait_for(lambda: len(gated.seen) == 10, what="the gated events once the gate opened")
        markers = publish_markers(own_publisher, gated_events)
        wait_for(lambda: handled(gated, markers), what="the markers behind the gated events")
    finally:
        runner.stop()
        thread.join(15)
        delete_topics(kafka)
    # Paused and resumed at the next unconsumed offset: every event once, none skipped.
    assert sorted(e.order_id for e in gated.seen if e.event_id not in markers) == sorted(gated_orders)


def test_a_gate_must_name_event_types_the_consumer_handles(live_settings, publisher):
    with pytest.raises(ValueError, match="without a handler"):
        ConsumerRunner(
            make_consumer(live_settings.kafka, "never-used", "gate-test"),
            publisher,
            {EVENT_TYPE: Recorder(set())},
            ConsumerOptions("integration-test", "never-used", live_settings.consumer),
            gate=CountingGate(limit=1),
        )
