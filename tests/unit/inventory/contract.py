"""Contract tests every StockRepository and ReservationRepository must pass (fakes and Mongo alike)."""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.inventory.domain import RESERVED, RESERVING, Line, Reservation, Shortage, StockItem, price_bounds
from services.inventory.ports import Hold, HoldEnd, ReservationRepository, StockRepository
from shared.events import Envelope

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def product(pid: str = "widget", available: int = 10, price: float = 5.5) -> StockItem:
    return StockItem(pid, f"Product {pid}", price, available=available, updated_at=NOW)


def reservation(rid: str = "res-1", status: str = RESERVING) -> Reservation:
    return Reservation(
        rid, "order-1", [Line("a", 2), Line("b", 1)], status, NOW, NOW + timedelta(minutes=15), NOW,
        origin="saga", correlation_id="order-1", customer_id="cust-1",
    )  # fmt: skip


def event(event_type: str = "InventoryReserved", event_id: str = "evt-1") -> Envelope:
    return Envelope(event_type, "order-1", "inventory", {"reservation_id": "res-1"}, event_id=event_id)


class StockRepositoryContract(ABC):
    @abstractmethod
    def make_repo(self) -> StockRepository:
        """Return an empty repository."""

    def test_a_new_repository_is_empty_until_a_product_is_added(self) -> None:
        repo = self.make_repo()
        assert repo.is_empty()
        assert repo.add(product())
        assert not repo.is_empty()

    def test_adding_an_existing_product_changes_nothing(self) -> None:
        repo = self.make_repo()
        repo.add(product(available=10))
        assert not repo.add(product(available=99))
        assert repo.get("widget").available == 10

    def test_get_returns_what_was_added_and_none_for_unknown_products(self) -> None:
        repo = self.make_repo()
        repo.add(product())
        item = repo.get("widget")
        assert (item.name, item.price, item.available, item.reserved, item.sold) == ("Product widget", 5.5, 10, 0, 0)
        assert item.holds == {}
        assert repo.get("nope") is None

    def test_list_is_sorted_by_product_id(self) -> None:
        repo = self.make_repo()
        for pid in ("c", "a", "b"):
            repo.add(product(pid))
        assert [item.product_id for item in repo.list()] == ["a", "b", "c"]

    def test_update_renames_reprices_and_adds_units(self) -> None:
        repo = self.make_repo()
        repo.add(product(available=10))
        item = repo.update("widget", name="Gadget", price=7.25, restock=5, now=NOW)
        assert (item.name, item.price, item.available) == ("Gadget", 7.25, 15)
        assert repo.update("widget", name=None, price=None, restock=0, now=NOW).name == "Gadget"
        assert repo.update("nope", name="x", price=None, restock=1, now=NOW) is None

    def test_hold_moves_available_units_to_reserved_once_per_reservation(self) -> None:
        repo = self.make_repo()
        repo.add(product(available=10))
        assert repo.hold("widget", "r1", 3, NOW)
        assert not repo.hold("widget", "r1", 3, NOW)
        item = repo.get("widget")
        assert (item.available, item.reserved, item.holds) == (7, 3, {"r1": 3})

    def test_hold_refuses_more_than_available_and_unknown_products(self) -> None:
        repo = self.make_repo()
        repo.add(product(available=2))
        assert not repo.hold("widget", "r1", 3, NOW)
        assert not repo.hold("nope", "r1", 1, NOW)
        assert repo.hold("widget", "r2", 2, NOW)
        assert repo.get("widget").available == 0

    def test_a_hold_at_a_price_is_taken_only_when_the_price_matches_to_the_cent(self) -> None:
        repo = self.make_repo()
        repo.add(product("widget", available=100, price=29.99))
        repo.add(product("whole", available=100, price=30))  # stored as an integer
        low, high = price_bounds(29.99)
        matching = [29.99, 29.990000001, 29.994999, low, high]
        others = [29.98, 30.0, 29.995001, math.nextafter(low, 0), math.nextafter(high, math.inf)]
        for n, price in enumerate(matching + others):
            assert repo.hold("widget", f"r{n}", 1, NOW, price) == (price in matching), price
        assert repo.get("widget").available == 100 - len(matching)
        assert repo.hold("whole", "r1", 1, NOW, 30.0)
        assert repo.hold("whole", "r2", 1, NOW, 30.004)
        assert not repo.hold("whole", "r3", 1, NOW, 29.99)
        assert not repo.hold("nope", "r1", 1, NOW, 29.99)

    def test_release_hold_returns_the_units_once(self) -> None:
        repo = self.make_repo()
        repo.add(product(available=10))
        repo.hold("widget", "r1", 4, NOW)
        assert repo.release_hold("widget", "r1", 4, NOW)
        assert not repo.release_hold("widget", "r1", 4, NOW)
        item = repo.get("widget")
        assert (item.available, item.reserved, item.sold, item.holds) == (10, 0, 0, {})

    def test_commit_hold_turns_reserved_units_into_sold_ones_once(self) -> None:
        repo = self.make_repo()
        repo.add(product(available=10))
        repo.hold("widget", "r1", 4, NOW)
        assert repo.commit_hold("widget", "r1", 4, NOW)
        assert not repo.commit_hold("widget", "r1", 4, NOW)
        assert not repo.release_hold("widget", "r1", 4, NOW)
        item = repo.get("widget")
        assert (item.available, item.reserved, item.sold, item.holds) == (6, 0, 4, {})

    def test_hold_all_takes_every_hold_in_one_write_or_none(self) -> None:
        repo = self.make_repo()
        repo.add(product(available=10))
        assert repo.hold_all("widget", [Hold("r1", 3), Hold("r2", 4, 5.5)], NOW)
        item = repo.get("widget")
        assert (item.available, item.reserved, item.holds) == (3, 7, {"r1": 3, "r2": 4})
        assert not repo.hold_all("widget", [Hold("r3", 2), Hold("r4", 2)], NOW)  # 4 > 3 available
        assert not repo.hold_all("widget", [Hold("r3", 1), Hold("r1", 1)], NOW)  # r1 holds it already
        assert not repo.hold_all("widget", [Hold("r3", 1, 5.5), Hold("r4", 1, 5.49)], NOW)  # one price is wrong
        assert not repo.hold_all("nope", [Hold("r3", 1)], NOW)
        assert repo.get("widget") == item
        assert repo.hold_all("widget", [], NOW)
        assert repo.hold_all("widget", [Hold("r3", 1, 5.5), Hold("r4", 2, 5.504)], NOW)
        assert repo.get("widget").available == 0

    def test_end_all_settles_every_hold_in_one_write_or_none(self) -> None:
        repo = self.make_repo()
        repo.add(product(available=10))
        repo.hold_all("widget", [Hold("r1", 1), Hold("r2", 2), Hold("r3", 3)], NOW)
        assert repo.end_all("widget", [HoldEnd("r1", 1, committed=True), HoldEnd("r2", 2, committed=False)], NOW)
        item = repo.get("widget")
        assert (item.available, item.reserved, item.sold, item.holds) == (6, 3, 1, {"r3": 3})
        assert not repo.end_all("widget", [HoldEnd("r3", 3, committed=True), HoldEnd("r1", 1, committed=True)], NOW)
        assert not repo.end_all("nope", [HoldEnd("r3", 3, committed=True)], NOW)
        assert repo.get("widget") == item
        assert repo.end_all("widget", [], NOW)
        assert repo.end_all("widget", [HoldEnd("r3", 3, committed=True)], NOW)
        item = repo.get("widget")
        assert (item.available, item.reserved, item.sold, item.holds) == (6, 0, 4, {})

    def test_concurrent_holds_never_oversell(self) -> None:
        repo = self.make_repo()
        repo.add(product(available=5))
        results: list[bool] = []
        barrier = threading.Barrier(10)

        def take(n: int) -> None:
            barrier.wait()
            results.append(repo.hold("widget", f"r{n}", 1, NOW))

        threads = [threading.Thread(target=take, args=(n,)) for n in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        item = repo.get("widget")
        assert results.count(True) == 5
        assert (item.available, item.reserved, len(item.holds)) == (0, 5, 5)


class ReservationRepositoryContract(ABC):
    @abstractmethod
    def make_repo(self) -> ReservationRepository:
        """Return an empty repository."""

    @abstractmethod
    def outbox_of(self, repo: Any, reservation_id: str) -> dict[str, dict[str, Any]]:
        """Return the unpublished events in the reservation's outbox, by event id."""

    def test_add_then_get_round_trips_every_field(self) -> None:
        repo = self.make_repo()
        assert repo.add(reservation())
        assert repo.get("res-1") == reservation()
        assert repo.get("unknown") is None

    def test_adding_an_existing_id_changes_nothing(self) -> None:
        repo = self.make_repo()
        repo.add(reservation())
        assert not repo.add(reservation(status=RESERVED), [event()])
        assert repo.get("res-1").status == RESERVING
        assert self.outbox_of(repo, "res-1") == {}

    def test_add_puts_its_events_in_the_outbox(self) -> None:
        repo = self.make_repo()
        repo.add(reservation(), [event()])
        assert self.outbox_of(repo, "res-1")["evt-1"]["event_type"] == "InventoryReserved"

    def test_transition_moves_only_from_the_given_statuses(self) -> None:
        repo = self.make_repo()
        repo.add(reservation())
        shortage = Shortage("a", 2, 1)
        moved = repo.transition(
            "res-1", [RESERVING], "failed", now=NOW, reason="out_of_stock", detail="short", shortages=[shortage]
        )
        assert moved
        assert not repo.transition("res-1", [RESERVING], RESERVED, now=NOW)
        assert not repo.transition("unknown", [RESERVING], RESERVED, now=NOW)
        stored = repo.get("res-1")
        assert (stored.status, stored.reason, stored.detail, stored.shortages) == (
            "failed",
            "out_of_stock",
            "short",
            [shortage],
        )

    def test_transition_returns_the_reservation_as_moved(self) -> None:
        repo = self.make_repo()
        repo.add(reservation(), [event()])
        later = NOW + timedelta(seconds=1)
        moved = repo.transition("res-1", [RESERVING], RESERVED, now=later, events=[event(event_id="e2")])
        assert moved == replace(reservation(), status=RESERVED, updated_at=later) == repo.get("res-1")
        released = repo.transition("res-1", [RESERVED], "released", now=later, reason="timeout")
        assert released == replace(moved, status="released", reason="timeout") == repo.get("res-1")

    def test_transition_for_an_order_moves_only_that_orders_reservation(self) -> None:
        repo = self.make_repo()
        repo.add(reservation())
        assert repo.transition("res-1", [RESERVING], RESERVED, now=NOW, order_id="order-2") is None
        assert repo.get("res-1").status == RESERVING
        assert repo.transition("res-1", [RESERVING], RESERVED, now=NOW, order_id="order-1").status == RESERVED

    def test_transition_adds_its_events_to_the_outbox_only_when_it_moves(self) -> None:
        repo = self.make_repo()
        repo.add(reservation())
        repo.transition("res-1", [RESERVING], RESERVED, now=NOW, events=[event(event_id="e1")])
        repo.transition("res-1", [RESERVING], RESERVED, now=NOW, events=[event(event_id="e2")])
        assert set(self.outbox_of(repo, "res-1")) == {"e1"}

    def test_a_reply_is_added_once_per_event_id(self) -> None:
        repo = self.make_repo()
        repo.add(reservation())
        repo.transition("res-1", [RESERVING], RESERVED, now=NOW, events=[event(event_id="e1")])
        assert not repo.add_reply("res-1", event("InventoryReleased", event_id="e1"))
        assert repo.add_reply("res-1", event("InventoryReleased", event_id="e2"))
        assert not repo.add_reply("res-1", event("InventoryReleased", event_id="e2"))
        assert self.outbox_of(repo, "res-1")["e1"]["event_type"] == "InventoryReserved"
        assert set(self.outbox_of(repo, "res-1")) == {"e1", "e2"}

    def test_add_all_inserts_the_new_ones_and_leaves_existing_ones_alone(self) -> None:
        repo = self.make_repo()
        repo.add(reservation("res-2"), [event()])
        batch = [reservation("res-1"), reservation("res-2", status=RESERVED), reservation("res-3")]
        assert repo.add_all(batch) == [True, False, True]
        assert [repo.get(rid).status for rid in ("res-1", "res-2", "res-3")] == [RESERVING] * 3
        assert repo.get("res-3") == reservation("res-3")
        assert set(self.outbox_of(repo, "res-2")) == {"evt-1"}
        assert self.outbox_of(repo, "res-1") == {}
        assert repo.add_all([]) == []
        # An added one takes replies and transitions like any other.
        assert repo.add_reply("res-1", event(event_id="e9"))
        assert repo.transition("res-1", [RESERVING], RESERVED, now=NOW, events=[event(event_id="e9")])
        assert set(self.outbox_of(repo, "res-1")) == {"e9"}

    def test_timers_are_added_and_removed_together(self) -> None:
        repo = self.make_repo()
        repo.add_timer("kept", NOW - timedelta(seconds=5))
        repo.add_timers([("a", NOW - timedelta(seconds=3)), ("b", NOW - timedelta(seconds=1)), ("kept", NOW)])
        repo.add_timers([("a", NOW - timedelta(seconds=2))])  # again: it moves, nothing doubles
        assert repo.due_timers(NOW, 10) == ["a", "b", "kept"]
        repo.remove_timers(["a", "b", "never-existed"])
        repo.remove_timers([])
        repo.add_timers([])
        assert repo.due_timers(NOW, 10) == ["kept"]

    def test_due_timers_come_earliest_first_and_removed_timers_never(self) -> None:
        repo = self.make_repo()
        repo.add_timer("late", NOW + timedelta(seconds=10))
        repo.add_timer("early", NOW - timedelta(seconds=10))
        repo.add_timer("now", NOW)
        repo.add_timer("gone", NOW - timedelta(seconds=20))
        repo.remove_timer("gone")
        repo.remove_timer("never-existed")
        assert repo.due_timers(NOW, 10) == ["early", "now"]
        assert repo.due_timers(NOW, 1) == ["early"]
        repo.add_timer("late", NOW - timedelta(seconds=30))  # setting it again moves it
        assert repo.due_timers(NOW, 10) == ["late", "early", "now"]
