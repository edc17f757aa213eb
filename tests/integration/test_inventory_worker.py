"""The inventory worker's handlers through the real Kafka and MongoDB: a command in, a reply out."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pymongo.database import Database

from services.inventory.app import bootstrap
from services.inventory.domain import StockItem
from services.inventory.handlers import HANDLERS, handle_batch
from services.inventory.mongo import MongoStockRepository
from shared.config import Settings
from shared.events import Envelope
from shared.kafka_utils import (
    Handler,
    bind_handlers,
    ensure_topics,
    make_consumer,
    topic_name,
)
from shared.runtime import connect
from tests.integration.conftest import next_event_of, running_worker


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` every 0.1 s until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout:.0f}s")


def only_orders(order_ids: set[str], handlers: dict[str, Handler]) -> dict[str, Handler]:
    """Ignore the commands of other tests on the shared topic, so this worker never answers them."""

    def scoped(handler: Handler) -> Handler:
        return lambda event: handler(event) if event.order_id in order_ids else None

    return {event_type: scoped(handler) for event_type, handler in handlers.items()}


def test_a_reserve_command_is_answered_with_inventory_reserved(
    service_settings: Callable[..., Settings], mongo_db: Database, unique: Callable[[str], str]
) -> None:
    settings = service_settings("inventory")
    ensure_topics(settings.kafka)
    clients = connect(settings)
    service = bootstrap(settings, clients=clients)
    (relay,) = clients.relays
    stock = MongoStockRepository(mongo_db["stock"])
    product_id = unique("itest-product")
    stock.add(StockItem(product_id, "Integration product", 12.5, available=10))
    order_id = str(uuid.uuid4())

    handlers = only_orders({order_id}, bind_handlers(HANDLERS, service))
    worker = running_worker(clients, handlers, service="inventory", group=unique("inventory-itest"), relay=relay)
    replies = make_consumer(settings.kafka, unique("inventory-itest-replies"), client_id="inventory-itest")
    with worker:
        try:
            command = Envelope(
                "ReserveInventory",
                order_id,
                "orchestrator",
                {
                    "reservation_id": f"res_{order_id}",
                    "items": [{"product_id": product_id, "quantity": 3, "price": 12.5}],
                },
            )
            clients.publisher.publish(command)
            clients.publisher.flush(10)

            doc = wait_for(lambda: mongo_db["reservations"].find_one({"_id": f"res_{order_id}", "status": "reserved"}))
            assert doc["order_id"] == order_id
            item = service.get_product(product_id)
            assert (item.available, item.reserved) == (7, 3)

            replies.subscribe([topic_name(clients.settings.kafka, "inventory.reserved")])

            def my_reply() -> Envelope | None:
                return next_event_of(replies, order_id)

            reply = wait_for(my_reply)
            assert reply.event_type == "InventoryReserved"
            assert reply.causation_id == command.event_id
            assert reply.data == {
                "reservation_id": f"res_{order_id}",
                "items": [{"product_id": product_id, "quantity": 3}],
            }
            wait_for(lambda: not mongo_db["reservations"].find_one({"_id": f"res_{order_id}"}).get("outbox"))
        finally:
            replies.close()
            clients.mongo.close()


def test_a_batch_of_commands_holds_and_settles_stock_as_one_by_one_would(
    service_settings: Callable[..., Settings], mongo_db: Database, unique: Callable[[str], str]
) -> None:
    """The worker's batch mode on the real Kafka and store: 12 orders of a product with 10 units
    and a plentiful one, published before the worker starts so that it fetches them together."""
    settings = service_settings("inventory")
    ensure_topics(settings.kafka)
    clients = connect(settings)
    service = bootstrap(settings, clients=clients)
    (relay,) = clients.relays
    stock = MongoStockRepository(mongo_db["stock"])
    scarce, plenty = unique("itest-scarce"), unique("itest-plenty")
    stock.add(StockItem(scarce, "Scarce", 3.0, available=10))
    stock.add(StockItem(plenty, "Plenty", 1.5, available=100))
    orders = [str(uuid.uuid4()) for _ in range(12)]
    items = [{"product_id": plenty, "quantity": 1, "price": 1.5}, {"product_id": scarce, "quantity": 1, "price": 3.0}]
    for order_id in orders:
        data = {"reservation_id": f"res_{order_id}", "items": items}
        clients.publisher.publish(Envelope("ReserveInventory", order_id, "orchestrator", data))
    clients.publisher.flush(10)

    ours = set(orders)
    batches: list[int] = []

    def mine(events: Sequence[Envelope]) -> Mapping[str, BaseException]:
        events = [event for event in events if event.order_id in ours]
        batches.append(len(events))
        return handle_batch(service, events)

    handlers = only_orders(ours, bind_handlers(HANDLERS, service))
    group = unique("inventory-itest")
    with running_worker(clients, handlers, service="inventory", group=group, relay=relay, batch_handler=mine):
        try:
            reservations = mongo_db["reservations"]

            def decided() -> list[str] | None:
                found = [reservations.find_one({"_id": f"res_{order_id}"}) for order_id in orders]
                statuses = [doc["status"] for doc in found if doc]
                return statuses if len(statuses) == 12 and "reserving" not in statuses else None

            statuses = wait_for(decided)
            assert statuses.count("reserved") == 10 and statuses.count("failed") == 2
            assert max(batches) > 1, f"the commands never came in one batch: {batches}"
            for n, (order_id, status) in enumerate(zip(orders, statuses, strict=True)):
                if status == "reserved":
                    kind = "CommitInventory" if n % 3 else "ReleaseInventory"
                    data = {"reservation_id": f"res_{order_id}", "reason": "payment_declined"}
                    clients.publisher.publish(Envelope(kind, order_id, "orchestrator", data))
            clients.publisher.flush(10)

            def settled() -> bool:
                return all(reservations.find_one({"_id": f"res_{o}"})["status"] != "reserved" for o in orders)

            wait_for(settled)
            scarce_item, plenty_item = service.get_product(scarce), service.get_product(plenty)
            assert scarce_item.holds == {} and plenty_item.holds == {}
            sold = sum(1 for o in orders if reservations.find_one({"_id": f"res_{o}"})["status"] == "committed")
            assert 0 < sold < 10  # both kinds were settled
            assert (scarce_item.available, scarce_item.reserved, scarce_item.sold) == (10 - sold, 0, sold)
            assert (plenty_item.available, plenty_item.reserved, plenty_item.sold) == (100 - sold, 0, sold)
            wait_for(lambda: all(not reservations.find_one({"_id": f"res_{o}"}).get("outbox") for o in orders))
        finally:
            clients.mongo.close()
