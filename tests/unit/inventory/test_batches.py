"""The inventory worker's batches: the same end as one command after another, in fewer round trips."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.inventory.domain import Line, StockItem
from services.inventory.handlers import HANDLERS, handle_batch
from services.inventory.holds import settle_holds_together
from services.inventory.service import InventoryService
from shared.events import Envelope
from tests.unit.batches import one_by_one
from tests.unit.inventory.conftest import TTL_S
from tests.unit.inventory.fakes import CallLog, FakeClock, InMemoryReservationRepository, InMemoryStockRepository
from tests.unit.inventory.helpers import command, reserve_command


@dataclass
class World:
    service: InventoryService
    stock: InMemoryStockRepository
    reservations: InMemoryReservationRepository
    calls: list[str]


def world() -> World:
    """Three products: two plentiful ones and ``widget``, with 5 units only."""
    clock = FakeClock()
    stock = InMemoryStockRepository(
        [
            StockItem("gadget", "Gadget", 10.0, available=100, updated_at=clock()),
            StockItem("gizmo", "Gizmo", 2.5, available=100, updated_at=clock()),
            StockItem("widget", "Widget", 4.0, available=5, updated_at=clock()),
        ]
    )
    reservations = InMemoryReservationRepository()
    calls: list[str] = []
    service = InventoryService(
        CallLog("stock", stock, calls), CallLog("reservations", reservations, calls), ttl_s=TTL_S, clock=clock
    )
    return World(service, stock, reservations, calls)


def state(w: World) -> tuple[object, ...]:
    """Everything a command can change: stock with its holds, reservations, timers, replies."""
    stock = [(i.product_id, i.available, i.reserved, i.sold, i.holds) for i in w.stock.list()]
    docs = {rid: w.reservations.get(rid) for rid in w.reservations.outboxes}
    replies = sorted((e.event_id, e.event_type, e.order_id, repr(e.data)) for e in w.reservations.events)
    outboxes = {rid: sorted(outbox) for rid, outbox in w.reservations.outboxes.items()}
    return stock, docs, dict(w.reservations.timers), replies, outboxes


def reserve(order_id: str, *items: tuple[str, int, float | None]) -> Envelope:
    return reserve_command(order_id, *items)


def commit(order_id: str, **data: object) -> Envelope:
    return command("CommitInventory", order_id, **data)


def release(order_id: str, **data: object) -> Envelope:
    return command("ReleaseInventory", order_id, reason="payment_declined", **data)


RESERVED_BEFORE = [reserve(f"p{n}", ("gadget", 1, 10.0), ("widget", 1, 4.0)) for n in range(3)]
REDELIVERED = reserve("o2", ("gizmo", 1, 2.5))

SCENARIOS: dict[str, tuple[list[Envelope], list[Envelope]]] = {
    "every order fits": (
        [],
        [reserve(f"o{n}", ("gadget", 2, 10.0), ("gizmo", 1, 2.5)) for n in range(4)],
    ),
    "a short product in the middle": (
        [],
        [
            reserve("o1", ("widget", 3, 4.0), ("gadget", 1, 10.0)),
            reserve("o2", ("gadget", 1, 10.0), ("widget", 3, 4.0)),
            reserve("o3", ("widget", 2, None), ("gizmo", 1, 2.5)),
            reserve("o4", ("widget", 1, 4.0)),
        ],
    ),
    "a refusal explained with the stock as one by one sees it": (
        [],
        [
            reserve("o1", ("gadget", 200, 10.0), ("widget", 3, 4.0)),
            reserve("o2", ("gizmo", 1, 2.5), ("widget", 3, 4.0)),
            reserve("o3", ("gadget", 1, 10.0), ("widget", 3, 4.0), ("gizmo", 500, 2.5)),
        ],
    ),
    "prices that disagree, before an order for the same product": (
        [],
        [reserve("o1", ("widget", 1, 4.0), ("widget", 1, 4.1)), reserve("o2", ("widget", 5, 4.0))],
    ),
    "a wrong price, an unknown product, prices that disagree": (
        [],
        [
            reserve("o1", ("gadget", 1, 10.0)),
            reserve("o2", ("gadget", 1, 9.99)),
            reserve("o3", ("nothing", 1, 1.0), ("gizmo", 1, 2.5)),
            reserve("o4", ("gizmo", 1, 2.5), ("gizmo", 1, 2.6)),
            reserve("o5", ("gadget", 1, 10.0)),
        ],
    ),
    "redelivered and already decided commands": (
        [REDELIVERED, *RESERVED_BEFORE],
        [REDELIVERED, reserve("o3", ("gizmo", 1, 2.5)), REDELIVERED, RESERVED_BEFORE[0]],
    ),
    "commits and releases, settled before, of another order, unknown": (
        RESERVED_BEFORE,
        [
            commit("p0"),
            release("p1"),
            commit("p2", reservation_id="res_p1"),  # not p2's reservation
            commit("p9"),  # never reserved
            release("p0"),  # committed just before
            commit("p2"),
            commit("p0"),  # redelivered
        ],
    ),
    "reserve, commit and release of one reservation in one batch": (
        [],
        [
            reserve("o1", ("widget", 2, 4.0)),
            reserve("o2", ("widget", 2, 4.0)),
            commit("o1"),
            reserve("o3", ("widget", 3, 4.0)),
            release("o2"),
            reserve("o4", ("widget", 3, 4.0)),
        ],
    ),
    "unusable commands": (
        [],
        [
            reserve("o1", ("gadget", 1, 10.0)),
            command("ReserveInventory", "o2", items=[]),
            command("CommitInventory", "o3", reservation_id=""),
            reserve("o4", ("gadget", 1, 10.0)),
        ],
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_batch_ends_exactly_as_the_same_commands_one_by_one(name: str) -> None:
    before, events = SCENARIOS[name]
    batched, sequential = world(), world()
    for w in (batched, sequential):
        one_by_one(HANDLERS, w.service, before)
    refused = handle_batch(batched.service, events)
    assert {event_id: str(err) for event_id, err in refused.items()} == one_by_one(HANDLERS, sequential.service, events)
    assert state(batched) == state(sequential)


def test_a_reservation_interrupted_before_its_holds_keeps_its_place_in_the_batch() -> None:
    # A crash after the drafts were inserted: on redelivery o1 must still come before o2.
    events = [reserve("o1", ("widget", 5, 4.0)), reserve("o2", ("widget", 5, 4.0))]
    batched, sequential = world(), world()
    for w in (batched, sequential):
        assert w.reservations.add_all([w.service._draft("res_o1", "o1", [Line("widget", 5)], events[0])]) == [True]
    handle_batch(batched.service, events)
    one_by_one(HANDLERS, sequential.service, events)
    assert state(batched) == state(sequential)
    assert [batched.reservations.get(f"res_o{n}").status for n in (1, 2)] == ["reserved", "failed"]


def test_a_batch_of_reservations_shares_its_writes() -> None:
    w = world()
    events = [reserve(f"o{n}", ("gadget", 2, 10.0), ("gizmo", 1, 2.5)) for n in range(10)]
    handle_batch(w.service, events)
    assert w.calls == [
        "reservations.add_all",
        "reservations.add_timers",
        "stock.hold_all",
        "stock.hold_all",
        *["reservations.transition"] * 10,
    ]
    assert [reply.event_type for reply in w.reservations.events] == ["InventoryReserved"] * 10


def test_a_batch_of_commits_and_releases_shares_its_settles() -> None:
    w = world()
    handle_batch(w.service, [reserve(f"o{n}", ("gadget", 2, 10.0), ("gizmo", 1, 2.5)) for n in range(10)])
    w.calls.clear()
    handle_batch(w.service, [commit(f"o{n}") if n % 3 else release(f"o{n}") for n in range(10)])
    assert w.calls == [
        *["reservations.transition"] * 10,
        "stock.end_all",
        "stock.end_all",
        "reservations.remove_timers",
    ]
    gadget = w.stock.get("gadget")
    assert (gadget.available, gadget.reserved, gadget.sold, gadget.holds) == (100 - 12, 0, 12, {})


def test_a_product_short_for_the_batch_gives_back_what_the_batch_took_and_goes_one_by_one() -> None:
    w = world()
    events = [reserve(f"o{n}", ("gizmo", 1, 2.5), ("widget", 2, 4.0)) for n in range(3)]
    handle_batch(w.service, events)
    outcomes = [w.reservations.get(f"res_o{n}").status for n in range(3)]
    assert outcomes == ["reserved", "reserved", "failed"]
    shared = ["reservations.add_all", "reservations.add_timers", "stock.hold_all", "stock.hold_all", "stock.end_all"]
    assert w.calls[:5] == shared  # gizmo held for all three, widget refused, gizmo given back
    assert w.calls[5:7] == ["reservations.add", "reservations.get"]  # then o0 resumes its draft, and so on
    widget = w.stock.get("widget")
    assert (widget.available, widget.reserved, sorted(widget.holds)) == (1, 4, ["res_o0", "res_o1"])
    assert w.stock.get("gizmo").holds == {"res_o0": 1, "res_o1": 1}


def test_settling_together_settles_the_rest_one_by_one_when_a_hold_is_gone() -> None:
    # Only a concurrent step (another worker after a rebalance) can settle a hold of a batch's
    # reservation first; the others must still be settled, each exactly once.
    w = world()
    handle_batch(w.service, [reserve(f"o{n}", ("gadget", 1, 10.0), ("gizmo", 2, 2.5)) for n in range(3)])
    committed = [w.reservations.transition(f"res_o{n}", ["reserved"], "committed", now=FakeClock()()) for n in range(3)]
    w.stock.commit_hold("gadget", "res_o1", 1, FakeClock()())
    settle_holds_together(w.stock, [r for r in committed if r is not None], FakeClock()())
    gadget, gizmo = w.stock.get("gadget"), w.stock.get("gizmo")
    assert (gadget.available, gadget.reserved, gadget.sold, gadget.holds) == (97, 0, 3, {})
    assert (gizmo.available, gizmo.reserved, gizmo.sold, gizmo.holds) == (94, 0, 6, {})
