"""Reserving stock: all or nothing, idempotent, crash-safe, answered through the outbox."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from services.inventory.domain import FAILED, RELEASED, RESERVED, RESERVING, InvalidOrder, Line, Reservation
from services.inventory.service import InventoryService
from tests.unit.inventory.conftest import TTL_S
from tests.unit.inventory.fakes import FakeClock, InMemoryReservationRepository, InMemoryStockRepository
from tests.unit.inventory.helpers import command, levels, lines, reserve_command


def reserve(service: InventoryService, order_id: str, *items: tuple[str, int]) -> Reservation:
    cmd = reserve_command(order_id, *((pid, q, None) for pid, q in items))
    return service.reserve(f"res_{order_id}", order_id, lines(*items), command=cmd)


def test_reserving_moves_units_from_available_to_reserved(
    service: InventoryService, stock: InMemoryStockRepository
) -> None:
    reservation = reserve(service, "o1", ("mouse", 2), ("keyboard", 1))
    assert reservation.status == RESERVED
    assert levels(stock, "mouse") == (998, 2, 0)
    assert levels(stock, "keyboard") == (999, 1, 0)
    assert stock.get("mouse").holds == {"res_o1": 2}


def test_a_reserve_command_is_answered_with_inventory_reserved(
    service: InventoryService, reservations: InMemoryReservationRepository
) -> None:
    cmd = reserve_command("o1", ("mouse", 2, 29.99), ("mouse", 1, 29.99))
    service.reserve("res_o1", "o1", [Line("mouse", 2, 29.99), Line("mouse", 1, 29.99)], command=cmd)
    [reply] = reservations.replies_to("o1")
    assert reply.event_type == "InventoryReserved"
    assert reply.data == {"reservation_id": "res_o1", "items": [{"product_id": "mouse", "quantity": 3}]}
    assert (reply.causation_id, reply.correlation_id, reply.customer_id) == (cmd.event_id, "o1", "cust-1")
    assert reservations.outboxes["res_o1"][reply.event_id]["event_type"] == "InventoryReserved"


def test_a_short_second_item_leaves_the_first_items_stock_untouched(
    service: InventoryService, stock: InMemoryStockRepository, reservations: InMemoryReservationRepository
) -> None:
    reservation = reserve(service, "o1", ("mouse", 2), ("rare_item", 6))
    assert (reservation.status, reservation.reason) == (FAILED, "out_of_stock")
    assert levels(stock, "mouse") == (1000, 0, 0)
    assert stock.get("mouse").holds == {}
    assert levels(stock, "rare_item") == (5, 0, 0)
    [reply] = reservations.replies_to("o1")
    assert reply.event_type == "InventoryReservationFailed"
    assert reply.data["reason"] == "out_of_stock"
    assert reply.data["items"] == [{"product_id": "rare_item", "requested": 6, "available": 5}]
    assert "rare_item" in reply.data["detail"]


def test_a_short_first_item_is_reported_with_every_other_short_item(service: InventoryService) -> None:
    reservation = reserve(service, "o1", ("laptop", 51), ("mouse", 1), ("rare_item", 9))
    assert [s.product_id for s in reservation.shortages] == ["laptop", "rare_item"]


def test_an_unknown_product_fails_as_invalid_order_without_moving_stock(
    service: InventoryService, stock: InMemoryStockRepository, reservations: InMemoryReservationRepository
) -> None:
    reservation = reserve(service, "o1", ("mouse", 1), ("unicorn", 1))
    assert (reservation.status, reservation.reason) == (FAILED, "invalid_order")
    assert levels(stock, "mouse") == (1000, 0, 0)
    [reply] = reservations.replies_to("o1")
    assert reply.data["reason"] == "invalid_order"
    assert reply.data["items"] == [{"product_id": "unicorn", "requested": 1, "available": 0}]


def test_a_price_that_differs_from_the_catalogue_fails_as_invalid_order(
    service: InventoryService, stock: InMemoryStockRepository
) -> None:
    cmd = reserve_command("o1", ("mouse", 1, 19.99))
    reservation = service.reserve("res_o1", "o1", [Line("mouse", 1, 19.99)], command=cmd)
    assert (reservation.status, reservation.reason) == (FAILED, "invalid_order")
    assert "price" in reservation.detail
    assert levels(stock, "mouse") == (1000, 0, 0)


def test_a_price_equal_to_the_cent_is_accepted(service: InventoryService) -> None:
    reservation = service.reserve("res_o1", "o1", [Line("mouse", 1, 29.990000001)])
    assert reservation.status == RESERVED


def test_a_redelivered_reserve_command_moves_stock_once_and_replies_once(
    service: InventoryService, stock: InMemoryStockRepository, reservations: InMemoryReservationRepository
) -> None:
    cmd = reserve_command("o1", ("mouse", 2, None))
    first = service.reserve("res_o1", "o1", lines(("mouse", 2)), command=cmd)
    again = service.reserve("res_o1", "o1", lines(("mouse", 2)), command=cmd)
    assert first.status == again.status == RESERVED
    assert levels(stock, "mouse") == (998, 2, 0)
    assert len(reservations.replies_to("o1")) == 1


def test_a_reserve_command_sent_again_under_a_new_id_gets_the_same_outcome_as_its_own_reply(
    service: InventoryService, stock: InMemoryStockRepository, reservations: InMemoryReservationRepository
) -> None:
    reserve(service, "o1", ("mouse", 2))
    assert reserve(service, "o1", ("mouse", 2)).status == RESERVED
    assert levels(stock, "mouse") == (998, 2, 0)
    first, second = reservations.replies_to("o1")
    assert (first.event_type, first.data) == (second.event_type, second.data)
    assert first.causation_id != second.causation_id


def test_a_failed_reservation_stays_failed_when_the_command_comes_again(
    service: InventoryService, stock: InMemoryStockRepository, clock: FakeClock
) -> None:
    reserve(service, "o1", ("rare_item", 6))
    stock.update("rare_item", name=None, price=None, restock=10, now=clock())
    assert reserve(service, "o1", ("rare_item", 6)).status == FAILED
    assert levels(stock, "rare_item") == (15, 0, 0)


def test_an_attempt_interrupted_by_a_crash_is_completed_when_the_command_returns(
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    clock: FakeClock,
) -> None:
    # The crashed attempt stored the reservation and held the first product only.
    now = clock()
    reservations.add(Reservation("res_o1", "o1", lines(("keyboard", 1), ("mouse", 2)), RESERVING, now, now, now))
    stock.hold("keyboard", "res_o1", 1, now)
    reservation = reserve(service, "o1", ("keyboard", 1), ("mouse", 2))
    assert reservation.status == RESERVED
    assert levels(stock, "keyboard") == (999, 1, 0)
    assert levels(stock, "mouse") == (998, 2, 0)
    assert [e.event_type for e in reservations.replies_to("o1")] == ["InventoryReserved"]


def test_holds_left_by_a_crash_after_the_failure_was_recorded_go_back_to_stock(
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    clock: FakeClock,
) -> None:
    now = clock()
    reservations.add(Reservation("res_o1", "o1", lines(("mouse", 2)), FAILED, now, now, now, reason="out_of_stock"))
    stock.hold("mouse", "res_o1", 2, now)
    assert reserve(service, "o1", ("mouse", 2)).status == FAILED
    assert levels(stock, "mouse") == (1000, 0, 0)


def test_a_reservation_released_while_it_was_reserving_ends_released_and_holds_nothing(
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    clock: FakeClock,
) -> None:
    now = clock()
    reservations.add(Reservation("res_o1", "o1", lines(("mouse", 2)), RESERVING, now, now, now))
    stock.hold("mouse", "res_o1", 2, now)
    _reservation, released = service.release("res_o1", command=command("ReleaseInventory", "o1"))
    assert released
    assert reserve(service, "o1", ("mouse", 2)).status == RELEASED
    assert levels(stock, "mouse") == (1000, 0, 0)


def test_ten_concurrent_orders_for_the_last_five_units_reserve_exactly_five(
    service: InventoryService, stock: InMemoryStockRepository
) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(10)

    def buy(n: int) -> None:
        barrier.wait()
        outcomes.append(service.reserve(f"res_{n}", f"order-{n}", lines(("rare_item", 1))).status)

    threads = [threading.Thread(target=buy, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(RESERVED) == 5
    assert outcomes.count(FAILED) == 5
    assert levels(stock, "rare_item") == (0, 5, 0)


def test_an_active_reservation_has_a_timer_and_a_failed_one_does_not(
    service: InventoryService, reservations: InMemoryReservationRepository, clock: FakeClock
) -> None:
    reserve(service, "ok", ("mouse", 1))
    reserve(service, "short", ("rare_item", 6))
    assert reservations.timers == {"res_ok": clock() + timedelta(seconds=TTL_S)}


# --- refusals: holds come first, and stock is read only to say why one was refused ---------------


def failed_reply(reservations: InMemoryReservationRepository, order_id: str = "o1") -> dict:
    [reply] = reservations.replies_to(order_id)
    assert reply.event_type == "InventoryReservationFailed"
    return reply.data


def test_an_unknown_product_after_held_ones_fails_as_invalid_order_and_gives_their_units_back(
    service: InventoryService, stock: InMemoryStockRepository, reservations: InMemoryReservationRepository
) -> None:
    # "zz_unknown" sorts last, so "keyboard" and "mouse" are held before it is refused.
    reservation = reserve(service, "o1", ("mouse", 2), ("zz_unknown", 1), ("keyboard", 1), ("zz_unknown", 2))
    assert (reservation.status, reservation.reason) == (FAILED, "invalid_order")
    assert failed_reply(reservations) == {
        "reservation_id": "res_o1",
        "reason": "invalid_order",
        "detail": "unknown product zz_unknown",
        "items": [{"product_id": "zz_unknown", "requested": 3, "available": 0}],
    }
    assert (levels(stock, "mouse"), levels(stock, "keyboard")) == ((1000, 0, 0), (1000, 0, 0))
    assert stock.get("mouse").holds == stock.get("keyboard").holds == {}
    assert reservations.timers == {}


def test_the_first_invalid_line_in_request_order_is_the_one_reported(
    service: InventoryService, reservations: InMemoryReservationRepository
) -> None:
    # Holds go in product order ("apple" first); the report follows the order's own line order.
    reserve(service, "o1", ("zebra", 1), ("apple", 2))
    assert failed_reply(reservations)["detail"] == "unknown product zebra"


def test_a_wrong_price_is_reported_before_a_shortage_and_holds_nothing(
    service: InventoryService, stock: InMemoryStockRepository, reservations: InMemoryReservationRepository
) -> None:
    # "laptop" is short (50 left) and sorts first; "mouse" carries a price that is not the catalogue's.
    cmd = reserve_command("o1", ("laptop", 51, 999.99), ("mouse", 3, 19.99))
    reservation = service.reserve("res_o1", "o1", [Line("laptop", 51, 999.99), Line("mouse", 3, 19.99)], command=cmd)
    assert (reservation.status, reservation.reason) == (FAILED, "invalid_order")
    assert failed_reply(reservations) == {
        "reservation_id": "res_o1",
        "reason": "invalid_order",
        "detail": "price 19.99 of mouse does not match the catalogue price 29.99",
        "items": [{"product_id": "mouse", "requested": 3, "available": 1000}],
    }
    assert (levels(stock, "laptop"), levels(stock, "mouse")) == ((50, 0, 0), (1000, 0, 0))


def test_a_wrong_price_after_a_held_product_gives_the_held_units_back(
    service: InventoryService, stock: InMemoryStockRepository
) -> None:
    lines_ = [Line("keyboard", 1, 89.99), Line("mouse", 1, 29.98)]
    reservation = service.reserve("res_o1", "o1", lines_, command=reserve_command("o1"))
    assert (reservation.status, reservation.detail) == (
        FAILED,
        "price 29.98 of mouse does not match the catalogue price 29.99",
    )
    assert levels(stock, "keyboard") == (1000, 0, 0)


def test_one_product_ordered_at_two_prices_is_invalid_even_when_one_of_them_is_right(
    service: InventoryService, stock: InMemoryStockRepository, reservations: InMemoryReservationRepository
) -> None:
    lines_ = [Line("mouse", 1, 29.99), Line("mouse", 2, 19.99)]
    reservation = service.reserve("res_o1", "o1", lines_, command=reserve_command("o1"))
    assert (reservation.status, reservation.reason) == (FAILED, "invalid_order")
    assert failed_reply(reservations)["items"] == [{"product_id": "mouse", "requested": 3, "available": 1000}]
    assert levels(stock, "mouse") == (1000, 0, 0)


def test_a_price_changed_since_a_crashed_attempt_took_its_hold_fails_the_resumed_attempt(
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    clock: FakeClock,
) -> None:
    now = clock()
    reservations.add(Reservation("res_o1", "o1", lines(("mouse", 2)), RESERVING, now, now, now, origin="saga"))
    stock.hold("mouse", "res_o1", 2, now)
    service.put_product("mouse", name=None, price=24.99, quantity=None)
    cmd = reserve_command("o1", ("mouse", 2, 29.99))
    reservation = service.reserve("res_o1", "o1", [Line("mouse", 2, 29.99)], command=cmd)
    assert (reservation.status, reservation.reason) == (FAILED, "invalid_order")
    assert "catalogue price 24.99" in reservation.detail
    assert levels(stock, "mouse") == (1000, 0, 0)


def test_a_hold_taken_at_the_right_price_by_a_crashed_attempt_counts_as_taken(
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
    clock: FakeClock,
) -> None:
    now = clock()
    reservations.add(Reservation("res_o1", "o1", lines(("mouse", 2)), RESERVING, now, now, now, origin="saga"))
    stock.hold("mouse", "res_o1", 2, now, 29.99)
    cmd = reserve_command("o1", ("mouse", 2, 29.99))
    assert service.reserve("res_o1", "o1", [Line("mouse", 2, 29.99)], command=cmd).status == RESERVED
    assert levels(stock, "mouse") == (998, 2, 0)


def test_a_rest_reservation_is_refused_before_anything_is_stored(
    service: InventoryService, reservations: InMemoryReservationRepository
) -> None:
    with pytest.raises(InvalidOrder):
        service.create_reservation("rest-order", [Line("mouse", 1), Line("unicorn", 1)])
    with pytest.raises(InvalidOrder):
        service.create_reservation("rest-order", [Line("mouse", 1, 1.0)])
    assert reservations.timers == {} and reservations.outboxes == {}
