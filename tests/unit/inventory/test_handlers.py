"""The saga's commands through HANDLERS: replies in the outbox, unusable commands dead-lettered."""

from __future__ import annotations

from typing import Any

import pytest

from services.inventory.domain import COMMITTED, RELEASED, RESERVED
from services.inventory.handlers import HANDLERS
from services.inventory.service import InventoryService
from shared.events import TOPIC_BY_EVENT
from shared.kafka_utils import PermanentError
from tests.unit.inventory.fakes import InMemoryReservationRepository, InMemoryStockRepository
from tests.unit.inventory.helpers import command, levels, reserve_command


def handle(service: InventoryService, event_type: str, order_id: str = "o1", **data: Any) -> None:
    HANDLERS[event_type](service, command(event_type, order_id, **data))


def test_every_handled_command_travels_on_inventory_commands() -> None:
    assert {TOPIC_BY_EVENT[event_type] for event_type in HANDLERS} == {"inventory.commands"}


def test_reserve_then_commit_sells_the_items(
    service: InventoryService, stock: InMemoryStockRepository, reservations: InMemoryReservationRepository
) -> None:
    HANDLERS["ReserveInventory"](service, reserve_command("o1", ("laptop", 2, 999.99)))
    assert service.get_reservation("res_o1").status == RESERVED
    handle(service, "CommitInventory")
    assert service.get_reservation("res_o1").status == COMMITTED
    assert levels(stock, "laptop") == (48, 0, 2)
    assert [e.event_type for e in reservations.replies_to("o1")] == ["InventoryReserved", "InventoryCommitted"]


def test_release_records_the_sagas_reason(service: InventoryService, stock: InMemoryStockRepository) -> None:
    HANDLERS["ReserveInventory"](service, reserve_command("o1", ("laptop", 2, None)))
    handle(service, "ReleaseInventory", reason="payment_declined")
    reservation = service.get_reservation("res_o1")
    assert (reservation.status, reservation.reason) == (RELEASED, "payment_declined")
    assert levels(stock, "laptop") == (50, 0, 0)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"items": []},
        {"items": "laptop"},
        {"items": [{"product_id": "laptop"}]},
        {"items": [{"product_id": "laptop", "quantity": 0}]},
        {"items": [{"product_id": "laptop", "quantity": 1.5}]},
        {"items": [{"product_id": "laptop", "quantity": True}]},
        {"items": [{"product_id": "laptop", "quantity": 1, "price": "cheap"}]},
        {"items": [{"product_id": 7, "quantity": 1}]},
        {"items": [{"product_id": "laptop", "quantity": 1}], "reservation_id": "res.o1"},
        {"items": [{"product_id": "laptop", "quantity": 1}], "reservation_id": None},
    ],
)
def test_a_reserve_command_with_unusable_data_is_rejected_permanently(
    service: InventoryService, stock: InMemoryStockRepository, data: dict[str, Any]
) -> None:
    with pytest.raises(PermanentError):
        handle(service, "ReserveInventory", **data)
    assert levels(stock, "laptop") == (50, 0, 0)


@pytest.mark.parametrize("event_type", ["ReleaseInventory", "CommitInventory"])
def test_release_and_commit_without_a_usable_reservation_id_are_rejected_permanently(
    service: InventoryService, event_type: str
) -> None:
    with pytest.raises(PermanentError):
        handle(service, event_type, reservation_id="$bad")
