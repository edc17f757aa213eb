"""Model-based tests of the saga's invariants.

``SagaMachine`` runs the real orchestrator, inventory and payment services over their in-memory
fakes, joined by a model of Kafka: one FIFO queue per (topic, order), as each order's events keep
their order on a topic while topics interleave freely. Hypothesis picks what happens next: an
order is placed (or published twice), a cancel is requested, a consumer takes the next events of
any of its queues (one by one through its handlers or as one fetched batch through its
handle_batch), a consumer gets events it handled before again (a redelivery, at any later time),
or the clock moves and the orchestrator's timers and the inventory's expiry job run. So replies
overtake each other, payments land after a cancel or a timeout, and commands are repeated.

After every step: a saga that reached a terminal state never leaves it and said so exactly once
(one OrderCompleted or OrderFailed, one notification); no order has two charges kept; per product
stock put in = available + reserved + sold with nothing negative; no reservation is released
twice or both released and committed. At the end the machine delivers everything still in
flight and lets every deadline pass, then checks the outcome: every order's saga is terminal; a
completed order has exactly one charge kept, of its total, and its units sold; a failed one has
no charge kept (a late payment was refunded) and holds no stock; and the payment service's vault
holds no card any more.

``test_batches_end_as_one_event_after_another`` checks the orchestrator's batch path alone: any
sequence of events, cut into batches anyhow, ends as the same events handled one by one.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict, deque
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from services.inventory import handlers as inventory_handlers
from services.inventory.domain import COMMITTED, RESERVED, StockItem
from services.inventory.service import InventoryService
from services.orchestrator import handlers as saga_handlers
from services.orchestrator.saga import TERMINAL_STATES, Timeouts
from services.orchestrator.service import SagaService
from services.payment import handlers as payment_handlers
from services.payment.domain import COMPLETED
from services.payment.service import PaymentService
from shared.events import Envelope
from tests.unit.batches import one_by_one
from tests.unit.inventory.fakes import InMemoryReservationRepository, InMemoryStockRepository
from tests.unit.models import model_settings
from tests.unit.orchestrator.fakes import FakeClock, InMemorySagaRepository, order_created, reply
from tests.unit.orchestrator.test_batches import outcome
from tests.unit.payment.fakes import InMemoryPaymentRepository, InMemoryStoredCardRepository, in_memory_vault
from tests.unit.payment.test_charge_model import DECLINED_CARD, GOOD_CARD, LedgerGateway

PAYMENT_TIMEOUT_S = 60
ORDER_TIMEOUT_S = 300
TTL_S = 90  # shorter than the order's deadline: an order's reservation must never expire anyway
PRICES = {"p-1": 10.0, "p-2": 5.5}
STOCK = {"p-1": 4, "p-2": 2}  # short enough that orders compete for it
ORDERS = ("o-1", "o-2", "o-3")

CONSUMERS = {
    "orchestrator": (saga_handlers.HANDLERS, saga_handlers.handle_batch),
    "inventory": (inventory_handlers.HANDLERS, inventory_handlers.handle_batch),
    "payment": (payment_handlers.HANDLERS, payment_handlers.handle_batch),
}
CONSUMER_OF = {event_type: name for name, (handlers, _batch) in CONSUMERS.items() for event_type in handlers}

MODEL_SETTINGS = model_settings(200, 25)


class SagaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.sagas = InMemorySagaRepository()
        self.orchestrator = SagaService(
            self.sagas,
            Timeouts(timedelta(seconds=PAYMENT_TIMEOUT_S), timedelta(seconds=ORDER_TIMEOUT_S)),
            self.clock,
            timer_batch=100,
            max_write_attempts=10,
        )
        self.stock = InMemoryStockRepository(
            StockItem(pid, pid, price, available=STOCK[pid], updated_at=self.clock()) for pid, price in PRICES.items()
        )
        self.reservations = InMemoryReservationRepository()
        self.inventory = InventoryService(self.stock, self.reservations, ttl_s=TTL_S, clock=self.clock)
        self.payments = InMemoryPaymentRepository()
        self.cards = InMemoryStoredCardRepository()
        self.gateway = LedgerGateway()
        self.payment = PaymentService(
            self.payments, self.gateway, vault=in_memory_vault(self.cards), charges_per_write=50, clock=self.clock
        )
        self.services = {"orchestrator": self.orchestrator, "inventory": self.inventory, "payment": self.payment}
        # Kafka: per (topic, order) the events not yet consumed; per consumer what it has consumed.
        self.queues: dict[tuple[str, str], deque[Envelope]] = defaultdict(deque)
        self.consumed: dict[str, list[Envelope]] = defaultdict(list)
        self.published: list[Envelope] = []  # every event any service (or the order service) published
        self.seen = {"sagas": 0, "reservations": 0}
        self.seen_payment: Counter[str] = Counter()
        self.orders: dict[str, Envelope] = {}  # placed orders, by id
        self.ended: dict[str, str] = {}  # the terminal state each saga reached

    # --- the model of Kafka -----------------------------------------------------------------

    def publish(self, event: Envelope) -> None:
        self.published.append(event)
        if event.event_type in CONSUMER_OF:
            self.queues[(event.topic, event.order_id)].append(event)

    def relay(self) -> None:
        """Publish what the services wrote to their outboxes since the last call, in order."""
        for event in self.sagas.written[self.seen["sagas"] :]:
            self.publish(event)
        self.seen["sagas"] = len(self.sagas.written)
        for event in self.reservations.events[self.seen["reservations"] :]:
            self.publish(event)
        self.seen["reservations"] = len(self.reservations.events)
        for payment_id, outbox in self.payments.outbox.items():
            for event in outbox[self.seen_payment[payment_id] :]:
                self.publish(event)
            self.seen_payment[payment_id] = len(outbox)

    def handle(self, consumer: str, events: list[Envelope], batched: bool) -> None:
        handlers, batch = CONSUMERS[consumer]
        service = self.services[consumer]
        refused = batch(service, events) if batched else one_by_one(handlers, service, events)
        assert not refused, refused
        self.consumed[consumer] += events
        self.relay()

    def waiting(self, consumer: str | None = None) -> list[tuple[str, str]]:
        return sorted(
            key for key, queue in self.queues.items() if queue and consumer in (None, CONSUMER_OF[queue[0].event_type])
        )

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.orchestrator.fire_due_timers()
        self.inventory.expire_due()
        self.relay()

    # --- what happens -----------------------------------------------------------------------

    @precondition(lambda self: len(self.orders) < len(ORDERS))
    @rule(
        p1=st.integers(1, 3),
        p2=st.integers(0, 1),
        card=st.sampled_from([GOOD_CARD, GOOD_CARD, DECLINED_CARD, None]),
    )
    def place_order(self, p1: int, p2: int, card: str | None) -> None:
        order_id = next(oid for oid in ORDERS if oid not in self.orders)
        items = [{"product_id": "p-1", "quantity": p1, "price": PRICES["p-1"]}]
        if p2:
            items.append({"product_id": "p-2", "quantity": p2, "price": PRICES["p-2"]})
        total = round(sum(item["quantity"] * item["price"] for item in items), 2)
        # As the order API does: the card goes to the payment service's vault, the order carries its token.
        stored = self.payment.vault.store(card) if card else None
        details = {
            "payment_method_token": stored.token if stored else None,
            "card_brand": stored.brand if stored else None,
            "card_last4": stored.last4 if stored else None,
        }
        self.orders[order_id] = order_created(order_id, items=items, total_amount=total, **details)
        self.publish(self.orders[order_id])

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def order_service_publishes(self, data: st.DataObject) -> None:
        """A cancel request (POST /orders/{id}/cancel, which may overtake the OrderCreated on its own
        topic), or the OrderCreated published again under a new event id."""
        order = self.orders[data.draw(st.sampled_from(sorted(self.orders)), label="order")]
        if data.draw(st.sampled_from(["again", "cancel"]), label="what") == "cancel":
            self.publish(reply("OrderCancelRequested", order.order_id))
        else:
            self.publish(
                Envelope(order.event_type, order.order_id, order.source, order.data, customer_id=order.customer_id)
            )

    @precondition(lambda self: self.waiting())
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Consumers take the next event of a queue, one to three times over, each through its handler."""
        for _ in range(data.draw(st.integers(1, 3), label="events")):
            if not self.waiting():
                break
            key = data.draw(st.sampled_from(self.waiting()), label="queue")
            self.handle(CONSUMER_OF[self.queues[key][0].event_type], [self.queues[key].popleft()], batched=False)

    @precondition(lambda self: self.waiting())
    @rule(data=st.data())
    def deliver_batch(self, data: st.DataObject) -> None:
        """A consumer takes the next events of several of its queues as one fetched batch."""
        consumer = data.draw(
            st.sampled_from(sorted({CONSUMER_OF[self.queues[k][0].event_type] for k in self.waiting()}))
        )
        chosen = data.draw(st.lists(st.sampled_from(self.waiting(consumer)), min_size=1, unique=True), label="queues")
        fetched = []
        for key in chosen:
            for _ in range(data.draw(st.integers(1, len(self.queues[key])), label="how many")):
                fetched.append(self.queues[key].popleft())
        self.handle(consumer, fetched, batched=True)

    @precondition(lambda self: self.consumed)
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """A consumer gets events it handled before again (a crash before it committed its offsets)."""
        consumer = data.draw(st.sampled_from(sorted(self.consumed)), label="consumer")
        again = data.draw(st.lists(st.sampled_from(self.consumed[consumer]), min_size=1, max_size=3), label="events")
        self.handle(consumer, again, batched=data.draw(st.booleans(), label="batched"))

    @rule(seconds=st.sampled_from([1, 1, 30, PAYMENT_TIMEOUT_S + 1, PAYMENT_TIMEOUT_S + 1, ORDER_TIMEOUT_S + 1]))
    def time_passes(self, seconds: int) -> None:
        self.tick(seconds)

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def a_terminal_saga_stays_there_and_says_so_once(self) -> None:
        for order_id, saga in self.sagas.sagas.items():
            if order_id in self.ended:
                assert saga.state == self.ended[order_id], (order_id, self.ended[order_id], saga.state)
            elif saga.state in TERMINAL_STATES:
                self.ended[order_id] = saga.state
            types = Counter(e.event_type for e in self.sagas.events_for(order_id))
            ends = types["OrderCompleted"] + types["OrderFailed"]
            assert ends == (saga.state in TERMINAL_STATES), (order_id, saga.state, types)
            assert types["NotificationRequested"] == ends, (order_id, types)
            if saga.state == "completed":
                assert types["OrderCompleted"] == 1, (order_id, types)

    @invariant()
    def no_order_keeps_two_charges(self) -> None:
        kept = Counter(self.payments.payments[pid].order_id for pid in self.gateway.kept())
        assert all(count <= 1 for count in kept.values()), kept
        completed = Counter(p.order_id for p in self.payments.payments.values() if p.status == COMPLETED)
        assert all(count <= 1 for count in completed.values()), completed

    @invariant()
    def stock_is_conserved(self) -> None:
        for item in self.stock.list():
            assert min(item.available, item.reserved, item.sold) >= 0, item
            assert item.available + item.reserved + item.sold == STOCK[item.product_id], item
            assert item.reserved == sum(item.holds.values()), item

    @invariant()
    def a_reservation_is_settled_at_most_once(self) -> None:
        released = Counter(
            e.data["reservation_id"]
            for e in {e.event_id: e for e in self.reservations.events}.values()
            if e.event_type == "InventoryReleased" and e.data.get("released")
        )
        for rid, count in released.items():
            assert count <= 1, (rid, count)
            assert self.reservations.get(rid).status != COMMITTED, rid

    # --- the end ----------------------------------------------------------------------------

    def teardown(self) -> None:
        if sys.exc_info()[1] is not None:
            return  # a step failed already: let its error be the one reported
        self.settle()
        self.check_outcome()

    def settle(self) -> None:
        """Deliver everything in flight, in order, and let every deadline pass."""
        for _round in range(20):
            while keys := self.waiting():
                key = keys[0]
                self.handle(CONSUMER_OF[self.queues[key][0].event_type], [self.queues[key].popleft()], batched=False)
            if not self.sagas.timers:
                break
            self.tick(ORDER_TIMEOUT_S + PAYMENT_TIMEOUT_S + 1)
        else:
            raise AssertionError(f"still not settled: timers {self.sagas.timers}")
        self.a_terminal_saga_stays_there_and_says_so_once()
        self.no_order_keeps_two_charges()
        self.stock_is_conserved()
        self.a_reservation_is_settled_at_most_once()

    def check_outcome(self) -> None:
        kept = self.gateway.kept()
        sold: Counter[str] = Counter()
        for order_id, created in self.orders.items():
            saga = self.sagas.get(order_id)
            assert saga is not None and saga.state in TERMINAL_STATES, (order_id, saga)
            reservation = self.reservations.get(f"res_{order_id}")
            charges = [amount for pid, amount in kept.items() if self.payments.payments[pid].order_id == order_id]
            if saga.state == "completed":
                assert charges == [created.data["total_amount"]], (order_id, charges)
                assert reservation is not None and reservation.status == COMMITTED, (order_id, reservation)
                sold.update({line.product_id: line.quantity for line in reservation.items})
            else:
                assert charges == [], (order_id, saga.failure_reason, charges)
                assert reservation is None or reservation.status not in (RESERVED, COMMITTED), (order_id, reservation)
        for item in self.stock.list():
            assert item.reserved == 0 and item.holds == {}, item
            assert item.sold == sold[item.product_id], (item, sold)
        # Every card went once its payment was settled or its order failed.
        assert self.cards.cards == {}, self.cards.cards


def test_every_saga_ends_once_with_its_money_and_stock_right() -> None:
    run_state_machine_as_test(SagaMachine, settings=MODEL_SETTINGS)


# Every kind of event the orchestrator takes, for two orders; drawing one twice is a redelivery.
POOL = [
    event
    for order_id in ("o-1", "o-2")
    for event in (
        order_created(order_id),
        order_created(order_id),  # the order published twice: another event id, the same order
        reply("OrderCancelRequested", order_id),
        reply("InventoryReserved", order_id),
        reply("InventoryReservationFailed", order_id),
        reply("InventoryReleased", order_id),
        reply("InventoryReleased", order_id, expired=True),
        reply("InventoryCommitted", order_id),
        reply("PaymentCompleted", order_id),
        reply("PaymentFailed", order_id),
        reply("PaymentRefunded", order_id),
    )
]


@model_settings(150)
@given(
    chunks=st.lists(
        st.tuples(st.lists(st.sampled_from(POOL), min_size=1, max_size=6), st.sampled_from([0, 1, 61, 301])),
        min_size=1,
        max_size=6,
    )
)
def test_batches_end_as_one_event_after_another(chunks: list[tuple[list[Envelope], int]]) -> None:
    """Any events, in any order and repeated, cut into fetched batches anyhow, with time passing
    (and the timers firing) between fetches: the batches end as the events handled one by one."""
    timeouts = Timeouts(timedelta(seconds=PAYMENT_TIMEOUT_S), timedelta(seconds=ORDER_TIMEOUT_S))
    worlds = []
    for batched in (True, False):
        repo, clock = InMemorySagaRepository(), FakeClock()
        service = SagaService(repo, timeouts, clock, timer_batch=100, max_write_attempts=10)
        refused: list[str] = []
        for events, seconds in chunks:
            if batched:
                refused += sorted(saga_handlers.handle_batch(service, events))
            else:
                refused += sorted(one_by_one(saga_handlers.HANDLERS, service, events))
            clock.advance(seconds)
            service.fire_due_timers()
        worlds.append((outcome(repo), refused))
    assert worlds[0] == worlds[1]
