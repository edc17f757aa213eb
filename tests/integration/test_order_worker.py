"""The order worker applies the saga's events from the real Kafka to an order in the real Mongo, in batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pymongo.database import Database

from services.order.app import bootstrap
from services.order.domain import Order
from services.order.handlers import HANDLERS, apply_batch
from services.order.mongo import MongoOrderRepository
from services.order.service import OrderService
from shared.config import Settings
from shared.consuming import ConsumerOptions, ConsumerRunner
from shared.events import Envelope
from shared.kafka_utils import (
    bind_handlers,
    make_consumer,
    make_publisher,
)
from shared.mongo import is_transient
from shared.outbox import OutboxRelay
from tests.unit.order.contract import make_order

SCAN = {"recover_interval_s": 300, "scan_timeout_s": 300}  # the recovery scan, as config.yaml sets it


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_worker_moves_an_order_to_completed_from_kafka_events(
    live_settings: Settings,
    service_settings: Callable[..., Settings],
    mongo_db: Database,
    unique: Callable[[str], str],
) -> None:
    settings = service_settings("order")
    publisher = make_publisher(settings.kafka, client_id=unique("order-test"))
    relay = OutboxRelay(publisher, [mongo_db["orders"]], retry_interval_s=1.0, clear_interval_s=0.5, **SCAN)
    repo = MongoOrderRepository(mongo_db["orders"], mongo_db["idempotency_keys"], relay)
    service = bootstrap(settings, orders=repo)
    order = make_order(order_id=unique("order"))
    repo.add(order, [])

    group = unique("order-worker-test")
    runner = ConsumerRunner(
        make_consumer(settings.kafka, group, client_id=group),
        publisher,
        bind_handlers(HANDLERS, service),
        ConsumerOptions(service="order", group_id=group, retry=settings.consumer, is_transient=is_transient),
        batch_handler=lambda events: apply_batch(service, events),  # as the worker runs it
    )
    thread = threading.Thread(target=runner.run, kwargs={"install_signal_handlers": False}, daemon=True)
    thread.start()
    try:
        validated = _event("OrderValidated", order, {"total_amount": order.total_amount})
        publisher.publish_sync(validated)
        assert wait_for(lambda: _status(service, order) == "validated"), "OrderValidated was not applied"
        completed = validated.follow(
            "OrderCompleted",
            "orchestrator",
            {"payment_id": "pay_" + order.order_id, "reservation_id": "res_" + order.order_id, "total_amount": 24.98},
        )
        publisher.publish_sync(completed)
        assert wait_for(lambda: _status(service, order) == "completed"), "OrderCompleted was not applied"
    finally:
        runner.stop()
        thread.join(timeout=15)
    stored = service.get_order(order.order_id)
    assert (stored.payment_id, stored.reservation_id) == ("pay_" + order.order_id, "res_" + order.order_id)
    assert [c.status for c in stored.status_history] == ["pending", "validated", "completed"]


def _event(event_type: str, order: Order, data: dict[str, object]) -> Envelope:
    return Envelope(
        event_type=event_type, order_id=order.order_id, source="orchestrator", data=data, customer_id=order.customer_id
    )


def _status(service: OrderService, order: Order) -> str:
    return service.get_order(order.order_id).status
