"""The worker's handlers: the saga's events move the order's status forward only."""

from __future__ import annotations

from itertools import zip_longest
from typing import Any

import pytest

from services.order.app import bootstrap
from services.order.domain import OrderNotFound
from services.order.handlers import HANDLERS, apply_batch
from services.order.service import OrderService
from shared.events import Envelope
from shared.kafka_utils import PermanentError
from tests.unit.order.fakes import FakeCardVault, InMemoryOrderRepository
from tests.unit.order.samples import new_order

DATA: dict[str, dict[str, Any]] = {
    "OrderValidated": {"total_amount": 44.98},
    "InventoryReserved": {"reservation_id": "res-1", "items": [{"product_id": "p-1", "quantity": 2}]},
    "PaymentRequested": {"payment_id": "pay-1", "amount": 44.98, "payment_method": "credit_card"},
    "OrderCompleted": {"payment_id": "pay-1", "reservation_id": "res-1", "total_amount": 44.98},
    "OrderFailed": {"reason": "payment_declined", "detail": "card declined"},
}


def deliver(service: OrderService, order_id: str, event_type: str, **data: Any) -> None:
    event = Envelope(event_type=event_type, order_id=order_id, source="orchestrator", data={**DATA[event_type], **data})
    HANDLERS[event_type](service, event)


@pytest.fixture
def order_id(service: OrderService) -> str:
    return service.place_order(new_order())[0].order_id


def test_follows_the_happy_path_to_completed(service: OrderService, order_id: str) -> None:
    for event_type in ("OrderValidated", "InventoryReserved", "PaymentRequested", "OrderCompleted"):
        deliver(service, order_id, event_type)
    order = service.get_order(order_id)
    assert (order.status, order.payment_id, order.reservation_id) == ("completed", "pay-1", "res-1")
    assert [c.status for c in order.status_history] == [
        "pending",
        "validated",
        "inventory_reserved",
        "payment_processing",
        "completed",
    ]


def test_stays_completed_when_earlier_events_arrive_late(service: OrderService, order_id: str) -> None:
    deliver(service, order_id, "OrderCompleted")
    deliver(service, order_id, "InventoryReserved", reservation_id="res-late")
    deliver(service, order_id, "OrderValidated")
    order = service.get_order(order_id)
    assert (order.status, order.reservation_id) == ("completed", "res-1")
    assert [c.status for c in order.status_history] == ["pending", "completed"]


def test_skips_statuses_it_never_heard_of(service: OrderService, order_id: str) -> None:
    deliver(service, order_id, "PaymentRequested")
    deliver(service, order_id, "InventoryReserved")
    order = service.get_order(order_id)
    assert (order.status, order.payment_id, order.reservation_id) == ("payment_processing", "pay-1", None)


def test_records_the_failure_reason_and_detail(service: OrderService, order_id: str) -> None:
    deliver(service, order_id, "OrderValidated")
    deliver(service, order_id, "OrderFailed")
    order = service.get_order(order_id)
    assert (order.status, order.failure_reason, order.failure_detail) == ("failed", "payment_declined", "card declined")


def test_keeps_a_failed_order_failed(service: OrderService, order_id: str) -> None:
    deliver(service, order_id, "OrderFailed", reason="out_of_stock")
    deliver(service, order_id, "OrderCompleted")
    deliver(service, order_id, "OrderFailed", reason="cancelled")
    order = service.get_order(order_id)
    assert (order.status, order.failure_reason, order.payment_id) == ("failed", "out_of_stock", None)


def test_applies_a_redelivered_event_once(service: OrderService, order_id: str) -> None:
    deliver(service, order_id, "OrderValidated")
    deliver(service, order_id, "OrderValidated")
    assert [c.status for c in service.get_order(order_id).status_history] == ["pending", "validated"]


def test_ignores_events_of_unknown_orders(service: OrderService, repo: InMemoryOrderRepository, order_id: str) -> None:
    queued = list(repo.events)
    for event_type in DATA:
        deliver(service, "foreign-order", event_type)  # no error: nothing to dead-letter
    assert apply_batch(service, [report("foreign-order", event_type) for event_type in DATA]) == {}
    with pytest.raises(OrderNotFound):
        service.get_order("foreign-order")  # no order made up for the reports
    assert list(repo.orders) == [order_id]
    assert service.get_order(order_id).status == "pending"  # the known order is untouched
    assert repo.events == queued  # nothing published about it


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("InventoryReserved", {"reservation_id": None}),
        ("PaymentRequested", {"payment_id": ""}),
        ("PaymentRequested", {"payment_id": 12}),
        ("OrderCompleted", {"payment_id": ["x"]}),
        ("OrderFailed", {"reason": "bored"}),
        ("OrderFailed", {"reason": None}),
    ],
)
def test_dead_letters_events_with_unusable_data(
    service: OrderService, order_id: str, event_type: str, data: dict[str, Any]
) -> None:
    with pytest.raises(PermanentError):
        deliver(service, order_id, event_type, **data)
    assert service.get_order(order_id).status == "pending"


# --- a batch at once ------------------------------------------------------------------------


def report(order_id: str, event_type: str, **data: Any) -> Envelope:
    return Envelope(event_type=event_type, order_id=order_id, source="orchestrator", data={**DATA[event_type], **data})


def snapshot(service: OrderService, order_id: str) -> tuple:
    order = service.get_order(order_id)
    return (
        order.status,
        order.reservation_id,
        order.payment_id,
        order.failure_reason,
        [c.status for c in order.status_history],
    )


HAPPY = ["OrderValidated", "InventoryReserved", "PaymentRequested", "OrderCompleted"]
BATCHES = {
    "in order": HAPPY,
    "out of order": ["InventoryReserved", "OrderValidated", "OrderCompleted", "PaymentRequested"],
    "redelivered": ["OrderValidated", "OrderValidated", "InventoryReserved", "InventoryReserved"],
    "failed midway": ["OrderValidated", "OrderFailed", "InventoryReserved", "OrderCompleted"],
    "terminal first": ["OrderCompleted", "OrderValidated"],
}


@pytest.mark.parametrize("name", BATCHES)
def test_a_batch_has_the_outcome_of_its_events_one_by_one(make_settings, name: str) -> None:
    one_by_one, batched = (
        bootstrap(make_settings("order"), orders=InMemoryOrderRepository(), vault=FakeCardVault()) for _ in range(2)
    )
    ids = [service.place_order(new_order())[0].order_id for service in (one_by_one, batched)]
    # Interleave a second order's happy path, so a batch holds several orders.
    others = [service.place_order(new_order())[0].order_id for service in (one_by_one, batched)]
    for service, oid, other in zip((one_by_one, batched), ids, others, strict=True):
        mine = [report(oid, t) for t in BATCHES[name]]
        theirs = [report(other, t) for t in HAPPY]
        batch = [e for pair in zip_longest(mine, theirs) for e in pair if e is not None]
        if service is one_by_one:
            for event in batch:
                HANDLERS[event.event_type](service, event)
        else:
            assert apply_batch(service, batch) == {}
    assert snapshot(batched, ids[1]) == snapshot(one_by_one, ids[0])
    assert (
        snapshot(batched, others[1])
        == snapshot(one_by_one, others[0])
        == (
            "completed",
            "res-1",
            "pay-1",
            None,
            ["pending", "validated", "inventory_reserved", "payment_processing", "completed"],
        )
    )


def test_a_batch_refuses_unusable_events_and_applies_the_rest(service: OrderService, order_id: str) -> None:
    bad = report(order_id, "OrderFailed", reason="bored")
    refused = apply_batch(service, [report(order_id, "OrderValidated"), bad, report("nobody", "OrderValidated")])
    assert list(refused) == [bad.event_id]
    assert isinstance(refused[bad.event_id], PermanentError)
    assert service.get_order(order_id).status == "validated"
