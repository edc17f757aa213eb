"""Releasing, committing and expiring reservations: each changes stock at most once and always replies."""

from __future__ import annotations

import random

import pytest

from services.inventory.catalogue import CATALOGUE
from services.inventory.domain import COMMITTED, EXPIRED, RELEASED, RESERVED, Line, ManagedBySaga
from services.inventory.service import InventoryService
from tests.unit.inventory.conftest import TTL_S
from tests.unit.inventory.fakes import FakeClock, InMemoryReservationRepository, InMemoryStockRepository
from tests.unit.inventory.helpers import command, levels, lines, reserve_command


@pytest.fixture
def reserved(service: InventoryService) -> str:
    """Order o1 holding 2 mice and 1 keyboard through the saga."""
    cmd = reserve_command("o1", ("mouse", 2, None), ("keyboard", 1, None))
    service.reserve("res_o1", "o1", lines(("mouse", 2), ("keyboard", 1)), command=cmd)
    return "res_o1"


def reply_types(reservations: InMemoryReservationRepository, order_id: str = "o1") -> list[str]:
    return [event.event_type for event in reservations.replies_to(order_id)]


def test_releasing_returns_the_units_and_replies_released(
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    reserved: str,
) -> None:
    cmd = command("ReleaseInventory", "o1", reason="timeout")
    reservation, released = service.release(reserved, command=cmd, reason="timeout")
    assert released
    assert (reservation.status, reservation.reason) == (RELEASED, "timeout")
    assert levels(stock, "mouse") == (1000, 0, 0)
    assert levels(stock, "keyboard") == (1000, 0, 0)
    reply = reservations.replies_to("o1")[-1]
    assert (reply.event_type, reply.data) == ("InventoryReleased", {"reservation_id": reserved, "released": True})
    assert reserved not in reservations.timers


def test_a_second_release_changes_nothing_and_replies_not_released(
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    reserved: str,
) -> None:
    service.release(reserved, command=command("ReleaseInventory", "o1"))
    _reservation, released = service.release(reserved, command=command("ReleaseInventory", "o1"))
    assert not released
    assert levels(stock, "mouse") == (1000, 0, 0)
    assert [e.data["released"] for e in reservations.replies_to("o1")[1:]] == [True, False]


def test_the_same_release_command_handled_twice_replies_once(
    service: InventoryService, reservations: InMemoryReservationRepository, reserved: str
) -> None:
    cmd = command("ReleaseInventory", "o1")
    service.release(reserved, command=cmd)
    service.release(reserved, command=cmd)
    assert reply_types(reservations) == ["InventoryReserved", "InventoryReleased"]


def test_releasing_a_failed_reservation_changes_nothing_and_replies_not_released(
    service: InventoryService, stock: InMemoryStockRepository, reservations: InMemoryReservationRepository
) -> None:
    service.reserve("res_o1", "o1", lines(("rare_item", 9)), command=reserve_command("o1", ("rare_item", 9, None)))
    _reservation, released = service.release("res_o1", command=command("ReleaseInventory", "o1"))
    assert not released
    assert levels(stock, "rare_item") == (5, 0, 0)
    assert reservations.replies_to("o1")[-1].data == {"reservation_id": "res_o1", "released": False}


def test_releasing_an_unknown_reservation_replies_not_released_and_blocks_a_late_reserve(
    service: InventoryService, stock: InMemoryStockRepository, reservations: InMemoryReservationRepository
) -> None:
    reservation, released = service.release("res_o9", command=command("ReleaseInventory", "o9"))
    assert (reservation.status, released) == (RELEASED, False)
    assert reservations.replies_to("o9")[0].data == {"reservation_id": "res_o9", "released": False}
    late = service.reserve("res_o9", "o9", lines(("mouse", 1)), command=reserve_command("o9", ("mouse", 1, None)))
    assert late.status == RELEASED
    assert levels(stock, "mouse") == (1000, 0, 0)
    assert len(reservations.replies_to("o9")) == 1


def test_the_reply_goes_to_the_reservations_order(
    service: InventoryService, reservations: InMemoryReservationRepository, reserved: str
) -> None:
    service.release(reserved, command=command("ReleaseInventory", "other-order", reservation_id=reserved))
    assert reservations.replies_to("o1")[-1].event_type == "InventoryReleased"
    assert reservations.replies_to("other-order") == []


def test_commit_moves_reserved_units_to_sold(
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    reserved: str,
) -> None:
    reservation, committed = service.commit(reserved, command=command("CommitInventory", "o1"))
    assert committed and reservation.status == COMMITTED
    assert levels(stock, "mouse") == (998, 0, 2)
    assert levels(stock, "keyboard") == (999, 0, 1)
    assert stock.get("mouse").holds == {}
    reply = reservations.replies_to("o1")[-1]
    assert (reply.event_type, reply.data) == ("InventoryCommitted", {"reservation_id": reserved, "committed": True})
    assert reserved not in reservations.timers


def test_a_redelivered_commit_sells_once_and_replies_once(
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    reserved: str,
) -> None:
    cmd = command("CommitInventory", "o1")
    service.commit(reserved, command=cmd)
    service.commit(reserved, command=cmd)
    assert levels(stock, "mouse") == (998, 0, 2)
    assert reply_types(reservations) == ["InventoryReserved", "InventoryCommitted"]


def test_committing_a_released_reservation_changes_no_stock_but_still_replies(
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    reserved: str,
) -> None:
    service.release(reserved, command=command("ReleaseInventory", "o1"))
    reservation, committed = service.commit(reserved, command=command("CommitInventory", "o1"))
    assert (reservation.status, committed) == (RELEASED, False)
    assert levels(stock, "mouse") == (1000, 0, 0)
    reply = reservations.replies_to("o1")[-1]
    assert (reply.event_type, reply.data["committed"]) == ("InventoryCommitted", False)


def test_committing_an_unknown_reservation_replies_not_committed(
    service: InventoryService, reservations: InMemoryReservationRepository
) -> None:
    _reservation, committed = service.commit("res_o7", command=command("CommitInventory", "o7"))
    assert not committed
    assert reservations.replies_to("o7")[0].data == {"reservation_id": "res_o7", "committed": False}


def test_a_sagas_reservation_never_expires_because_the_saga_settles_it(
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    clock: FakeClock,
    reserved: str,
) -> None:
    clock.advance(TTL_S * 3)
    assert service.expire_due() == 0
    assert service.get_reservation(reserved).status == RESERVED
    assert reservations.timers == {}
    # However late the commit arrives (a backlog, an outage), the paid order's units are sold.
    _reservation, committed = service.commit(reserved, command=command("CommitInventory", "o1"))
    assert committed
    assert levels(stock, "mouse") == (998, 0, 2)


def test_a_sagas_reservation_cannot_be_released_over_rest(
    service: InventoryService, stock: InMemoryStockRepository, reserved: str
) -> None:
    with pytest.raises(ManagedBySaga):
        service.release(reserved)
    assert service.get_reservation(reserved).status == RESERVED


def test_a_rest_reservation_expires_without_any_event(
    service: InventoryService, reservations: InMemoryReservationRepository, clock: FakeClock
) -> None:
    reservation = service.create_reservation("rest-order", [Line("mouse", 1)])
    clock.advance(TTL_S)
    assert service.expire_due() == 1
    assert service.get_reservation(reservation.reservation_id).status == EXPIRED
    assert reservations.events == []


def test_stock_is_conserved_through_a_random_mix_of_operations(
    service: InventoryService, stock: InMemoryStockRepository, clock: FakeClock
) -> None:
    rng = random.Random(7)
    restocked = {pid: 0 for pid, *_ in CATALOGUE}
    products = ["laptop", "rare_item", "mouse"]
    for step in range(400):
        rid, action = f"r{rng.randrange(40)}", rng.random()
        if action < 0.45:
            items = [(rng.choice(products), rng.randint(1, 8)) for _ in range(rng.randint(1, 3))]
            service.reserve(rid, f"o-{rid}", lines(*items), command=reserve_command(f"o-{rid}"))
        elif action < 0.65:
            service.release(rid, command=command("ReleaseInventory", f"o-{rid}", reservation_id=rid))
        elif action < 0.85:
            service.commit(rid, command=command("CommitInventory", f"o-{rid}", reservation_id=rid))
        elif action < 0.92:
            pid, units = rng.choice(products), rng.randint(0, 3)
            service.put_product(pid, name=None, price=None, quantity=units)
            restocked[pid] += units
        else:
            clock.advance(rng.randint(1, TTL_S))
            service.expire_due()
        assert_conserved(stock, restocked, step)


def assert_conserved(stock: InMemoryStockRepository, restocked: dict[str, int], step: int) -> None:
    for pid, _name, _price, initial in CATALOGUE:
        item = stock.get(pid)
        assert item.available + item.reserved + item.sold == initial + restocked[pid], (step, pid)
        assert min(item.available, item.reserved, item.sold) >= 0, (step, pid)
        assert sum(item.holds.values()) == item.reserved, (step, pid)


def test_reserved_stays_reserved_before_its_ttl(service: InventoryService, clock: FakeClock, reserved: str) -> None:
    clock.advance(TTL_S / 2)
    service.expire_due()
    assert service.get_reservation(reserved).status == RESERVED
