"""The notification worker's handler through the real Kafka broker and MongoDB."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.notification.app import bootstrap
from services.notification.handlers import HANDLERS
from shared.config import Settings
from shared.events import Envelope
from shared.kafka_utils import bind_handlers, consumer_lag, ensure_topics, make_consumer, topic_name
from shared.runtime import Clients, connect
from tests.integration.conftest import next_event_of, running_worker


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "out" / "notifications.log"


@pytest.fixture
def clients(service_settings: Callable[..., Settings], log_path: Path) -> Iterator[Clients]:
    settings = service_settings("notification", notification={"sender": "file", "file_path": str(log_path)})
    ensure_topics(settings.kafka)
    clients = connect(settings)
    yield clients
    clients.publisher.flush(10)
    clients.mongo.close()


@pytest.fixture
def worker(clients: Clients, unique: Callable[[str], str]) -> Iterator[str]:
    """The notification handler consuming as a fresh group (yielded), with the outbox relay running."""
    service = bootstrap(clients.settings, clients=clients)
    (relay,) = clients.relays
    group = unique("notification-it")
    handlers = bind_handlers(HANDLERS, service)
    with running_worker(clients, handlers, service="notification", group=group, relay=relay):
        yield group


def lines_of(path: Path, order_id: str) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [record for record in map(json.loads, path.read_text().splitlines()) if record["order_id"] == order_id]


def test_a_notification_request_is_sent_once_written_to_the_file_and_reported(
    clients: Clients, worker: str, unique: Callable[[str], str], log_path: Path
) -> None:
    order_id = unique("order")
    data = {
        "customer_id": "cust-it",
        "customer_email": "it@example.com",
        "type": "order_confirmation",
        "subject": "Order confirmed",
        "message": f"Order {order_id} is confirmed.",
    }
    request = Envelope("NotificationRequested", order_id, "orchestrator", data)
    again = Envelope("NotificationRequested", order_id, "orchestrator", data)  # same request, new event id
    publisher = clients.publisher
    sent_reader = make_consumer(clients.settings.kafka, unique("notification-it-sent"), "notification-it-sent")
    sent_reader.subscribe([topic_name(clients.settings.kafka, "notifications.sent")])
    try:
        for event in (request, request, again):
            publisher.publish_sync(event)
        notifications = clients.db["notifications"]
        notification_id = f"ntf_{order_id}_order_confirmation"
        doc = wait_for(
            lambda: notifications.find_one({"_id": notification_id, "status": "sent", "outbox": {}}),
            what="the sent notification with its outbox published",
        )
        assert (doc["customer_id"], doc["channel"], doc["attempts"]) == ("cust-it", "email", 1)

        def sent_event() -> Envelope | None:
            return next_event_of(sent_reader, order_id)

        reported = wait_for(sent_event, what="NotificationSent on notifications.sent")
        assert reported.data == {"notification_id": notification_id, "type": "order_confirmation", "channel": "email"}
        # All three deliveries consumed (committed), still one notification: no inbox needed.
        wait_for(lambda: consumer_lag(clients.settings.kafka, [worker]).get(worker) == 0, what="all requests handled")
        assert notifications.count_documents({"order_id": order_id}) == 1
        [line] = lines_of(log_path, order_id)
        assert line["notification_id"] == notification_id
        assert line["message"] == f"Order {order_id} is confirmed."
    finally:
        sent_reader.close()
