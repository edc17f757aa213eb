"""The outbox relay and the Mongo plumbing against the real servers."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer
from prometheus_client import REGISTRY
from pydantic import SecretStr
from pymongo.errors import OperationFailure

from shared.events import Envelope
from shared.kafka_utils import PublishError, make_publisher, topic_name
from shared.mongo import MongoAuthError, MongoInbox, make_mongo_client, ping
from shared.outbox import OutboxRelay, outbox_document
from tests.integration.test_kafka_utils import wait_for

SCAN = {"recover_interval_s": 300, "scan_timeout_s": 300}  # the recovery scan, as config.yaml sets it
CLEAR_INTERVAL_S = 0.05  # short, so that the test that waits for a clear waits little


def test_the_relay_delivers_an_event_written_before_a_crash(live_settings, mongo_db, unique):
    order_id = unique("order")
    event = Envelope(event_type="NotificationSent", order_id=order_id, source="test", data={"k": "v"})
    # The state change and its event in one write; the process "dies" before publishing.
    mongo_db["things"].insert_one({"_id": order_id, "state": "done", "outbox": outbox_document([event])})

    reader = Consumer(
        {
            "bootstrap.servers": live_settings.kafka.bootstrap_servers,
            "group.id": unique("reader"),
            "auto.offset.reset": "latest",
        }
    )
    reader.subscribe([topic_name(live_settings.kafka, "notifications.sent")])
    wait_for(lambda: reader.poll(0.2) is None and bool(reader.assignment()), what="the reader's assignment")

    # A new process starts: its relay's recovery scan finds and publishes the event.
    relay = OutboxRelay(
        make_publisher(live_settings.kafka, "relay-test"),
        [mongo_db["things"]],
        retry_interval_s=1.0,
        clear_interval_s=0.5,
        **SCAN,
    )
    relay.start()
    received = []
    try:
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is not None and not msg.error() and msg.key() == order_id.encode():
                received.append(Envelope.from_json(msg.value()))
        wait_for(lambda: mongo_db["things"].find_one({"_id": order_id})["outbox"] == {}, what="the outbox to empty")
    finally:
        relay.stop()
        reader.close()
    assert [e.event_id for e in received] == [event.event_id]
    assert mongo_db["things"].find_one({"_id": order_id})["state"] == "done"


def test_documents_round_trip_over_an_authenticated_connection(live_settings, mongo_db):
    assert live_settings.mongo.username, "the local server runs with authentication"
    inbox = MongoInbox(mongo_db["processed_events"], "group-a")
    assert not inbox.seen("event-1")
    inbox.mark("event-1")
    inbox.mark("event-1")
    assert inbox.seen("event-1")
    assert not MongoInbox(mongo_db["processed_events"], "group-b").seen("event-1")


def test_a_wrong_password_fails_with_a_clear_error(live_settings):
    wrong = live_settings.mongo.model_copy(update={"password": SecretStr("definitely-wrong")})
    with pytest.raises(MongoAuthError, match="refused the credentials"):
        ping(make_mongo_client(wrong))


def test_anonymous_clients_cannot_read(live_settings):
    anonymous = live_settings.mongo.model_copy(update={"username": None, "password": None})
    with pytest.raises(OperationFailure, match="requires authentication"):
        make_mongo_client(anonymous)["orders"]["orders"].find_one()


class RefusingOncePublisher:
    """An EventPublisher whose first publish fails, as a full producer queue would."""

    def __init__(self) -> None:
        self.refused = False
        self.published: list[str] = []

    def publish(self, event, on_delivery=None) -> None:
        if not self.refused:
            self.refused = True
            raise PublishError("producer queue is full")
        self.published.append(event.event_id)
        if on_delivery:
            on_delivery(None)

    def poll(self, timeout: float) -> None:
        return None

    def flush(self, timeout: float) -> int:
        return 0


def test_a_refused_publish_is_retried_and_does_not_hold_up_the_rest(mongo_db, unique):
    events = {}
    for name in ("first", "second"):
        event = Envelope(event_type="NotificationSent", order_id=unique(name), source="test")
        events[name] = event
        mongo_db["things"].insert_one({"_id": name, "outbox": outbox_document([event])})
    publisher = RefusingOncePublisher()
    relay = OutboxRelay(
        publisher,
        [mongo_db["things"]],
        retry_interval_s=0.1,
        clear_interval_s=0.5,
        recover_interval_s=3600,
        scan_timeout_s=300,
    )
    relay.start()
    try:
        wait_for(lambda: len(publisher.published) == 2, timeout=10, what="both events")
        wait_for(lambda: all(d["outbox"] == {} for d in mongo_db["things"].find()), timeout=10, what="empty outboxes")
    finally:
        relay.stop()
    assert sorted(publisher.published) == sorted(e.event_id for e in events.values())


def test_the_inbox_forgets_old_events_of_its_own_group_only(mongo_db):
    from datetime import UTC, datetime, timedelta

    inbox = MongoInbox(mongo_db["processed_events"], "group-a")
    other = MongoInbox(mongo_db["processed_events"], "group-b")
    for box in (inbox, other):
        box.mark("old")
    mongo_db["processed_events"].update_many({}, {"$set": {"at": datetime.now(UTC) - timedelta(days=8)}})
    inbox.mark("new")
    assert inbox.prune(datetime.now(UTC) - timedelta(days=7)) == 1
    assert not inbox.seen("old") and inbox.seen("new")
    assert other.seen("old")


def _commands(command: str, collection: str) -> float:
    return REGISTRY.get_sample_value("mongo_commands_total", {"command": command, "collection": collection}) or 0.0


def test_notified_events_are_published_without_a_read_and_cleared_in_one_write(live_settings, mongo_db, unique):
    publisher = make_publisher(live_settings.kafka, "relay-test")
    relay = OutboxRelay(
        publisher, [mongo_db["things"]], retry_interval_s=1.0, clear_interval_s=CLEAR_INTERVAL_S, **SCAN
    )
    events = {}
    for n in range(3):
        event = Envelope(event_type="NotificationSent", order_id=unique("order"), source="test")
        events[f"doc-{n}"] = event
        mongo_db["things"].insert_one({"_id": f"doc-{n}", "outbox": outbox_document([event])})
    finds, updates = _commands("find", "things"), _commands("update", "things")

    for doc_id, event in events.items():
        relay.notify(mongo_db["things"], doc_id, [event])
    relay.run_once(wait=0)
    assert publisher.flush(10) == 0  # every delivery report is in
    time.sleep(CLEAR_INTERVAL_S)  # no thread to wait for: the relay clears at most once per interval, let one pass
    relay.run_once(wait=0)

    assert _commands("find", "things") == finds  # published from memory
    assert _commands("update", "things") == updates + 1  # one bulk write for the three documents
    assert all(doc["outbox"] == {} for doc in mongo_db["things"].find())
