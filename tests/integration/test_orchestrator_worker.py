"""The orchestrator's handlers through the real Kafka: OrderCreated in, ReserveInventory out."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pymongo.database import Database

from services.orchestrator import worker
from services.orchestrator.app import bootstrap, mongo_sagas
from services.orchestrator.handlers import HANDLERS, handle_batch
from shared.config import Settings
from shared.events import Envelope
from shared.kafka_utils import Handler, bind_handlers, ensure_topics, make_consumer, topic_name
from shared.runtime import Clients, connect
from tests.integration.conftest import running_worker
from tests.unit.orchestrator.fakes import order_created, reply


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` every 0.1 s until it returns something truthy; return that or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    return None


def only_for(order_ids: set[str], handlers: dict[str, Handler]) -> dict[str, Handler]:
    """Handle only this test's orders: the shared topics carry other tests' events too, and a
    fresh group starting at the earliest offset must not emit saga commands for them."""

    def wrap(handler: Handler) -> Handler:
        return lambda event: handler(event) if event.order_id in order_ids else None

    return {event_type: wrap(handler) for event_type, handler in handlers.items()}


def test_order_created_from_kafka_starts_a_saga_and_sends_reserve_inventory(
    service_settings: Callable[..., Settings], mongo_db: Database, unique: Callable[[str], str]
) -> None:
    settings = service_settings("orchestrator")
    clients = connect(settings)
    service = bootstrap(settings, clients=clients)
    (relay,) = clients.relays
    order_id = unique("order")
    handlers = only_for({order_id}, bind_handlers(HANDLERS, service))
    worker = running_worker(clients, handlers, service="orchestrator", group=unique("orchestrator-test"), relay=relay)
    with worker:
        try:
            created = order_created(order_id)
            clients.publisher.publish_sync(created)

            saga = wait_for(lambda: mongo_db["sagas"].find_one({"_id": order_id, "state": "reserving"}))
            assert saga, "the saga did not reach reserving"
            command = _published_reserve(settings, unique("orchestrator-probe"), order_id)
            assert command, "no ReserveInventory for the order on inventory.commands"
            assert wait_for(lambda: not mongo_db["sagas"].find_one({"_id": order_id})["outbox"], timeout=10), (
                "the relay did not clear the published outbox entries"
            )
        finally:
            clients.mongo.close()

    assert command.data == {
        "reservation_id": f"res_{order_id}",
        "items": [
            {"product_id": "p-1", "quantity": 2, "price": 10.0},
            {"product_id": "p-2", "quantity": 1, "price": 5.5},
        ],
    }
    assert command.causation_id == created.event_id


def _published_reserve(settings: Settings, group: str, order_id: str) -> Envelope | None:
    """Read inventory.commands with a fresh group until our order's ReserveInventory shows up."""
    consumer = make_consumer(settings.kafka, group, client_id=group)
    consumer.subscribe([topic_name(settings.kafka, "inventory.commands")])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or msg.key() != order_id.encode():
                continue
            event = Envelope.from_json(msg.value())
            if event.event_type == "ReserveInventory":
                return event
        return None
    finally:
        consumer.close()


def test_worker_main_wires_the_handlers_the_relay_and_the_deadline_jobs(
    service_settings: Callable[..., Settings], mongo_db: Database, monkeypatch: Any
) -> None:
    settings = service_settings("orchestrator", saga={"timer_interval_s": 0.5})
    wired: dict[str, Any] = {}

    def run_worker(clients: Clients, handlers: Any, **kw: Any) -> None:
        wired.update(kw, clients=clients, handlers=handlers)

    monkeypatch.setattr(worker, "run_worker", run_worker)

    worker.main(settings)

    assert set(wired["handlers"]) == set(HANDLERS)
    assert len(wired["clients"].relays) == 1  # registered for run_worker to start and stop
    intervals = [interval for interval, _job in wired["periodic"]]
    assert intervals[0] == 0.5
    assert all(job() == 0 for _interval, job in wired["periodic"])
    assert "created_at_-1" in mongo_db["sagas"].index_information()
    assert "due_at_1" in mongo_db["saga_timers"].index_information()


def test_the_worker_in_batch_mode_runs_sagas_to_the_end_through_kafka(
    service_settings: Callable[..., Settings], mongo_db: Database, unique: Callable[[str], str]
) -> None:
    """Ten orders published before the worker starts, so that it fetches them together; then their
    replies, a kind at a time. Every saga completes and the relay publishes and clears its commands."""
    settings = service_settings("orchestrator")
    ensure_topics(settings.kafka)
    clients = connect(settings)
    sagas = mongo_sagas(clients, cache_size=100)
    (relay,) = clients.relays
    service = bootstrap(settings, clients=clients, sagas=sagas)
    orders = [unique("order") for _ in range(10)]
    ours = set(orders)
    batches: list[int] = []

    def mine(events: Sequence[Envelope]) -> Mapping[str, BaseException]:
        events = [event for event in events if event.order_id in ours]
        batches.append(len(events))
        return handle_batch(service, events)

    def publish_and_wait(events: list[Envelope], state: str) -> None:
        for event in events:
            clients.publisher.publish(event)
        clients.publisher.flush(10)
        found = wait_for(lambda: mongo_db["sagas"].count_documents({"_id": {"$in": orders}, "state": state}) == 10)
        assert found, f"the sagas did not all reach {state}"

    for order_id in orders:
        clients.publisher.publish(order_created(order_id))
    clients.publisher.flush(10)
    handlers = only_for(ours, bind_handlers(HANDLERS, service))
    group = unique("orchestrator-itest")
    with running_worker(clients, handlers, service="orchestrator", group=group, relay=relay, batch_handler=mine):
        try:
            found = wait_for(lambda: mongo_db["sagas"].count_documents({"_id": {"$in": orders}}) == 10)
            assert found, "the sagas were not all started"
            assert max(batches) > 1, f"the orders never came in one batch: {batches}"
            publish_and_wait([reply("InventoryReserved", o) for o in orders], "awaiting_payment")
            publish_and_wait([reply("PaymentCompleted", o) for o in orders], "completed")
            cleared = wait_for(
                lambda: all(not mongo_db["sagas"].find_one({"_id": o})["outbox"] for o in orders), timeout=10
            )
            assert cleared, "the relay did not publish and clear every saga's commands"
        finally:
            clients.mongo.close()

    for order_id in orders:
        saga = mongo_db["sagas"].find_one({"_id": order_id})
        assert [step["step"] for step in saga["steps"]] == [
            "validate_order",
            "reserve_inventory",
            "reserve_inventory",
            "take_payment",
            "take_payment",
            "commit_inventory",
            "notify_customer",
        ], saga["steps"]
