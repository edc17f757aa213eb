"""What each saga command costs in repository calls (one call is one Mongo round trip).

The store's CPU per round trip is the benchmark's ceiling, so these pin the calls of the usual
paths exactly: a read that creeps back in fails here before it shows up in the benchmark.
"""

from __future__ import annotations

import pytest

from services.inventory.domain import COMMITTED, FAILED, RELEASED, RESERVED
from services.inventory.handlers import HANDLERS
from services.inventory.service import InventoryService
from tests.unit.inventory.conftest import TTL_S
from tests.unit.inventory.fakes import CallLog, FakeClock, InMemoryReservationRepository, InMemoryStockRepository
from tests.unit.inventory.helpers import command, levels, lines, reserve_command

RESERVE = ["reservations.add", "reservations.add_timer", "stock.hold", "stock.hold", "reservations.transition"]
COMMIT = ["reservations.transition", "stock.commit_hold", "stock.commit_hold", "reservations.remove_timer"]
RELEASE = ["reservations.transition", "stock.release_hold", "stock.release_hold", "reservations.remove_timer"]


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def counted(
    service: InventoryService,  # seeds the catalogue into ``stock``
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    clock: FakeClock,
    calls: list[str],
) -> InventoryService:
    """A service over the same fakes that logs every repository call into ``calls``."""
    return InventoryService(
        CallLog("stock", stock, calls), CallLog("reservations", reservations, calls), ttl_s=TTL_S, clock=clock
    )


def reserve_two_products(service: InventoryService, order_id: str = "o1") -> None:
    """The benchmark's order: two products, priced as the saga sends them."""
    HANDLERS["ReserveInventory"](service, reserve_command(order_id, ("mouse", 2, 29.99), ("keyboard", 1, 89.99)))


def test_a_saga_order_reserved_then_committed_costs_nine_round_trips(
    counted: InventoryService, stock: InMemoryStockRepository, calls: list[str]
) -> None:
    reserve_two_products(counted)
    assert calls == RESERVE
    calls.clear()
    HANDLERS["CommitInventory"](counted, command("CommitInventory", "o1"))
    assert calls == COMMIT
    assert levels(stock, "mouse") == (998, 0, 2)
    assert levels(stock, "keyboard") == (999, 0, 1)


def test_a_saga_release_costs_one_write_per_product_plus_two(
    counted: InventoryService, stock: InMemoryStockRepository, calls: list[str]
) -> None:
    reserve_two_products(counted)
    calls.clear()
    HANDLERS["ReleaseInventory"](counted, command("ReleaseInventory", "o1", reason="payment_declined"))
    assert calls == RELEASE
    assert levels(stock, "mouse") == (1000, 0, 0)


def test_a_redelivered_reserve_command_reads_once_and_writes_nothing_new(
    counted: InventoryService, reservations: InMemoryReservationRepository, calls: list[str]
) -> None:
    cmd = reserve_command("o1", ("mouse", 2, 29.99))
    HANDLERS["ReserveInventory"](counted, cmd)
    calls.clear()
    HANDLERS["ReserveInventory"](counted, cmd)
    # The reply is offered again under the same id (a no-op), as it must be after a crash.
    assert calls == ["reservations.add", "reservations.get", "reservations.add_reply"]
    assert len(reservations.replies_to("o1")) == 1


def test_a_redelivered_commit_reads_once_then_settles_again(
    counted: InventoryService, reservations: InMemoryReservationRepository, calls: list[str]
) -> None:
    reserve_two_products(counted)
    cmd = command("CommitInventory", "o1")
    HANDLERS["CommitInventory"](counted, cmd)
    calls.clear()
    HANDLERS["CommitInventory"](counted, cmd)
    # A committed reservation never changes, so no second transition is tried and it is not re-read.
    assert calls == ["reservations.transition", "reservations.get", "reservations.add_reply", *COMMIT[1:]]
    assert [e.event_type for e in reservations.replies_to("o1")] == ["InventoryReserved", "InventoryCommitted"]


def test_a_commit_naming_another_order_falls_back_to_reading_the_reservation(
    counted: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    calls: list[str],
) -> None:
    reserve_two_products(counted)
    calls.clear()
    reservation, committed = counted.commit(
        "res_o1", command=command("CommitInventory", "other-order", reservation_id="res_o1")
    )
    assert (reservation.status, committed) == (COMMITTED, True)
    assert calls == ["reservations.transition", "reservations.get", *COMMIT]
    assert reservations.replies_to("o1")[-1].event_type == "InventoryCommitted"
    assert reservations.replies_to("other-order") == []
    assert levels(stock, "mouse") == (998, 0, 2)


def test_a_valid_order_reads_no_stock_and_conflicting_prices_take_no_hold(
    counted: InventoryService, stock: InMemoryStockRepository, calls: list[str]
) -> None:
    reserve_two_products(counted)
    assert "stock.get" not in calls
    calls.clear()
    cmd = reserve_command("o2", ("keyboard", 1, 89.99), ("mouse", 1, 29.99), ("mouse", 1, 19.99))
    HANDLERS["ReserveInventory"](counted, cmd)
    assert counted.get_reservation("res_o2").reason == "invalid_order"
    assert "stock.hold" not in calls
    assert levels(stock, "keyboard") == (999, 1, 0)  # o1's hold only


def test_each_returned_reservation_is_the_one_stored(
    counted: InventoryService, reservations: InMemoryReservationRepository
) -> None:
    reserved = counted.reserve("res_o1", "o1", lines(("mouse", 2), ("keyboard", 1)), command=reserve_command("o1"))
    assert reserved == reservations.get("res_o1")
    reserve_two_products(counted, "o2")
    committed, _ = counted.commit("res_o1", command=command("CommitInventory", "o1"))
    released, _ = counted.release("res_o2", command=command("ReleaseInventory", "o2"), reason="timeout")
    failed = counted.reserve("res_o3", "o3", lines(("rare_item", 9)))
    assert (reserved.status, committed.status, released.status, failed.status) == (
        RESERVED,
        COMMITTED,
        RELEASED,
        FAILED,
    )
    for returned in (committed, released, failed):
        assert returned == reservations.get(returned.reservation_id)
