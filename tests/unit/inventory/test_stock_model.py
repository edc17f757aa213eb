"""Model-based test of the stock invariants: random interleavings of the saga's inventory commands
(reserve, commit, release), their redeliveries, REST reservations and releases, restocks and
expiries, fed to two services over in-memory fakes: one handles each command as it comes, the
other the same commands in the worker's batches.

After every step, in both: per product, stock put in = available + reserved + sold and nothing is
negative; the holds are exactly the reserved reservations' lines; sold is exactly the committed
reservations' lines; a reservation, once settled, never changes again and is settled (released,
expired or committed) at most once. And the batches end exactly as one command after another.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from services.inventory.domain import ACTIVE, COMMITTED, RESERVED, InventoryError, Line, StockItem
from services.inventory.handlers import HANDLERS, handle_batch
from services.inventory.service import InventoryService
from shared.events import Envelope
from tests.unit.batches import one_by_one
from tests.unit.inventory.fakes import FakeClock, InMemoryReservationRepository, InMemoryStockRepository
from tests.unit.inventory.helpers import command
from tests.unit.models import model_settings

TTL_S = 900
PRICES = {"gadget": 10.0, "widget": 4.0}
INITIAL = {"gadget": 6, "widget": 3}
ORDERS = ("o-0", "o-1", "o-2", "o-3")
API_RESERVATIONS = ("api-0", "api-1")

MODEL_SETTINGS = model_settings(150, 25)


@dataclass
class World:
    service: InventoryService
    stock: InMemoryStockRepository
    reservations: InMemoryReservationRepository
    clock: FakeClock


def world() -> World:
    clock = FakeClock()
    stock = InMemoryStockRepository(
        StockItem(pid, pid.title(), price, available=INITIAL[pid], updated_at=clock()) for pid, price in PRICES.items()
    )
    reservations = InMemoryReservationRepository()
    return World(InventoryService(stock, reservations, ttl_s=TTL_S, clock=clock), stock, reservations, clock)


def state(w: World) -> tuple[object, ...]:
    """Everything a command can change: stock with its holds, reservations, timers, replies."""
    stock = [(i.product_id, i.available, i.reserved, i.sold, i.holds) for i in w.stock.list()]
    docs = {rid: w.reservations.get(rid) for rid in w.reservations.outboxes}
    replies = sorted((e.event_id, e.event_type, e.order_id, repr(e.data)) for e in w.reservations.events)
    return stock, docs, dict(w.reservations.timers), replies


def line_items(lines: list[Line]) -> list[dict[str, object]]:
    return [{"product_id": line.product_id, "quantity": line.quantity, "price": line.price} for line in lines]


@st.composite
def order_line(draw: st.DrawFn) -> Line:
    product = draw(st.sampled_from(sorted(PRICES)))
    # Mostly the catalogue's price; now and then none, or a wrong one (the order is invalid).
    price = draw(st.sampled_from([PRICES[product]] * 8 + [None, 7.0]))
    return Line(product, draw(st.integers(1, 3)), price)


LINES = st.lists(order_line(), min_size=1, max_size=2)
# The saga reserves first and settles after: reserves come more often than commits and releases.
KINDS = ["ReserveInventory", "ReserveInventory", "CommitInventory", "ReleaseInventory"]


class StockMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.one = world()  # each command handled as it comes
        self.batched = world()  # the same commands in the worker's batches
        self.put_in = dict(INITIAL)  # units ever added per product
        self.sent: list[Envelope] = []
        self.items: dict[str, list[Line]] = {}
        self.settled_as: dict[str, str] = {}  # final status of each reservation, once it has one

    @initialize(orders=st.fixed_dictionaries({order_id: LINES for order_id in (*ORDERS, *API_RESERVATIONS)}))
    def order_lines(self, orders: dict[str, list[Line]]) -> None:
        """What each order asks for; the saga re-sends the same items when it re-sends a command."""
        self.items = orders

    def worlds(self) -> tuple[World, World]:
        return self.one, self.batched

    # --- the saga's commands ------------------------------------------------------------------

    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Deliver a fetch of 1-5 commands: new ones and redeliveries of any sent before."""
        fetched = []
        for _ in range(data.draw(st.integers(1, 5), label="size")):
            if self.sent and data.draw(st.booleans(), label="redeliver"):
                fetched.append(data.draw(st.sampled_from(self.sent), label="again"))
                continue
            kind = data.draw(st.sampled_from(KINDS), label="kind")
            order_id = data.draw(st.sampled_from(ORDERS), label="order")
            if kind == "ReserveInventory":
                fetched.append(command(kind, order_id, items=line_items(self.items[order_id])))
            elif kind == "ReleaseInventory":
                reason = data.draw(st.sampled_from(["cancelled", "payment_declined", "order_timeout"]), label="why")
                fetched.append(command(kind, order_id, reason=reason))
            else:
                fetched.append(command(kind, order_id))
        self.sent += [event for event in fetched if event not in self.sent]
        refused_one = one_by_one(HANDLERS, self.one.service, fetched)
        refused_batched = handle_batch(self.batched.service, fetched)
        assert refused_one == {} and refused_batched == {}

    # --- REST, restocks and time --------------------------------------------------------------

    @rule(rid=st.sampled_from(API_RESERVATIONS))
    def rest_reserve(self, rid: str) -> None:
        """A reservation made over REST (the service picks a fresh id; this one is fixed to compare)."""
        for w in self.worlds():
            w.service.reserve(rid, f"order-{rid}", self.items[rid])

    @rule(rid=st.sampled_from((*API_RESERVATIONS, *(f"res_{order_id}" for order_id in ORDERS))))
    def rest_release(self, rid: str) -> None:
        """DELETE /reservations/{id}: a saga's active reservation refuses, an unknown one is not found."""
        outcomes = []
        for w in self.worlds():
            try:
                _reservation, released = w.service.release(rid)
                outcomes.append(released)
            except InventoryError as err:
                outcomes.append(type(err).__name__)
        assert outcomes[0] == outcomes[1]

    @rule(product=st.sampled_from(sorted(PRICES)), quantity=st.integers(1, 3))
    def restock(self, product: str, quantity: int) -> None:
        for w in self.worlds():
            w.service.put_product(product, name=None, price=None, quantity=quantity)
        self.put_in[product] += quantity

    @rule(seconds=st.sampled_from([1, 60, 300, TTL_S, TTL_S + 1]))
    def time_passes(self, seconds: int) -> None:
        """The clock moves and the expiry job runs."""
        expired = []
        for w in self.worlds():
            w.clock.advance(seconds)
            expired.append(w.service.expire_due())
        assert expired[0] == expired[1]

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def batches_end_as_one_command_after_another(self) -> None:
        assert state(self.batched) == state(self.one)

    @invariant()
    def stock_is_conserved_and_matches_the_reservations(self) -> None:
        for w in self.worlds():
            reservations = {rid: w.reservations.get(rid) for rid in w.reservations.outboxes}
            for item in w.stock.list():
                pid = item.product_id
                assert min(item.available, item.reserved, item.sold) >= 0, item
                assert item.available + item.reserved + item.sold == self.put_in[pid], item
                assert item.reserved == sum(item.holds.values()), item
                held = {
                    rid: sum(line.quantity for line in r.items if line.product_id == pid)
                    for rid, r in reservations.items()
                    if r.status == RESERVED and any(line.product_id == pid for line in r.items)
                }
                assert item.holds == held, (pid, item.holds, held)
                sold = sum(
                    line.quantity
                    for r in reservations.values()
                    if r.status == COMMITTED
                    for line in r.items
                    if line.product_id == pid
                )
                assert item.sold == sold, (pid, item.sold, sold)

    @invariant()
    def a_reservation_is_settled_once_and_never_changes_after(self) -> None:
        for w, label in ((self.one, "one"), (self.batched, "batched")):
            released = Counter(
                e.data["reservation_id"]
                for e in {e.event_id: e for e in w.reservations.events}.values()
                if e.event_type == "InventoryReleased" and e.data.get("released")
            )
            for rid in w.reservations.outboxes:
                reservation = w.reservations.get(rid)
                assert released[rid] + (reservation.status == COMMITTED) <= 1, (rid, reservation.status)
                if released[rid]:
                    assert reservation.status not in (*ACTIVE, COMMITTED), (rid, reservation.status)
                key = f"{label}:{rid}"
                if key in self.settled_as:
                    assert reservation.status == self.settled_as[key], (rid, self.settled_as[key], reservation)
                elif reservation.status not in ACTIVE:
                    self.settled_as[key] = reservation.status


def test_stock_is_conserved_whatever_the_order_and_repetition_of_commands() -> None:
    run_state_machine_as_test(StockMachine, settings=MODEL_SETTINGS)
