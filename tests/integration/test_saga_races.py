"""Two orchestrator workers of one consumer group race on one saga, through the real Kafka and FerretDB.

An order's saga awaits its payment; a cancel (OrderCancelRequested, what ``POST /orders/{id}/cancel``
publishes) and a PaymentCompleted reach two different workers at once. Both workers read the saga
at the same version and decide; the test then lets one write first, and the other's versioned
write must fail and be decided again on a fresh read. Whichever wins, the saga ends exactly once:
cancelled after the charge means one release of the stock and one refund request; completed
means the cancel is ignored. The real inventory worker answers the saga's stock commands; the test
plays the payment service.

Under the default assignor an order's topics are co-partitioned, so both events would reach one
worker; a second writer of a saga comes from elsewhere (a worker that lost its partitions in the
middle of a batch and still writes, or another worker's deadline job). To make the second writer a
second worker on cue, each event is produced into a partition the chosen worker owns.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from services.orchestrator.ports import SagaWrite
from services.orchestrator.saga import SagaState
from shared.events import Envelope
from tests.integration.harness import (
    HOLD_LIMIT_S,
    Worker,
    count_types,
    dead_letters,
    group_split,
    inventory_worker,
    isolated,
    new_producer,
    orchestrator_worker,
    produce_into,
    read_events,
    running,
    wait_until,
)
from tests.unit.orchestrator.fakes import order_created, reply

PRODUCT, PRICE, QUANTITY, STOCK = "mouse", 29.99, 2, 1000  # from the catalogue inventory seeds
TOTAL = 59.98
SAGA_OUTPUT_TOPICS = [
    "inventory.commands",
    "payments.requested",
    "payments.refund_requested",
    "orders.validated",
    "orders.completed",
    "orders.failed",
    "notifications.email",
]


class Race:
    """Holds each worker's first write of one saga until the test lets it go, and records the
    saga it was about to write and whether the write landed."""

    def __init__(self, order_id: str, names: Sequence[str]) -> None:
        self.order_id = order_id
        self.decided: dict[str, SagaState] = {}
        self.landed: dict[str, bool] = {}
        self.arrived = {name: threading.Event() for name in names}
        self.go = {name: threading.Event() for name in names}
        self.wrote = {name: threading.Event() for name in names}
        self._armed = False
        self._passed: set[str] = set()
        self._lock = threading.Lock()

    def arm(self) -> None:
        self._armed = True

    def release_all(self) -> None:
        for event in self.go.values():
            event.set()

    def holds(self, name: str, order_id: str) -> bool:
        """Whether this write of ``name`` is the one to hold (its first of the saga once armed)."""
        with self._lock:
            if not self._armed or order_id != self.order_id or name in self._passed:
                return False
            self._passed.add(name)
            return True

    def arrive(self, name: str, saga: SagaState) -> None:
        self.decided[name] = saga
        self.arrived[name].set()
        self.go[name].wait(HOLD_LIMIT_S)

    def done(self, name: str, landed: bool) -> None:
        self.landed[name] = landed
        self.wrote[name].set()

    def repository(self, name: str) -> Any:
        return lambda inner: RacingSagas(inner, name, self)


class RacingSagas:
    """A worker's saga repository whose first write of the racing saga waits for the race's go."""

    def __init__(self, inner: Any, name: str, race: Race) -> None:
        self._inner = inner
        self._name = name
        self._race = race

    def write_many(self, writes: Sequence[SagaWrite]) -> list[bool]:
        mine = [n for n, write in enumerate(writes) if self._race.holds(self._name, write.saga.order_id)]
        if not mine:
            return self._inner.write_many(writes)
        self._race.arrive(self._name, writes[mine[0]].saga)
        landed = self._inner.write_many(writes)
        self._race.done(self._name, landed[mine[0]])
        return landed

    def update(self, saga: SagaState, events: Sequence[Envelope]) -> bool:
        if not self._race.holds(self._name, saga.order_id):
            return self._inner.update(saga, events)
        self._race.arrive(self._name, saga)
        landed = self._inner.update(saga, events)
        self._race.done(self._name, landed)
        return landed

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


def _handled(worker: Worker, event_type: str) -> bool:
    return any(event.event_type == event_type for batch in worker.batches for event in batch)


class FinishedSagaKeptDeadline(AssertionError):
    """A saga that has ended has a row in saga_timers (it counts as in flight until the row fires)."""


@pytest.mark.parametrize(
    ("first", "cancel_at"),
    [
        pytest.param("cancel", "home"),
        ("cancel", "other"),
        ("payment", "home"),
        ("payment", "other"),
    ],
)
def test_a_cancel_and_a_payment_racing_on_two_workers_end_the_saga_once(first: str, cancel_at: str) -> None:
    """``first``: whose write lands first. ``cancel_at``: the cancel goes to the worker that owns
    the order's partitions (and has its saga cached), the payment to the other, or the reverse."""
    with isolated("race") as env:
        orchestrator = env.settings("orchestrator")
        inventory_settings = env.settings("inventory")
        order_id = f"order-{uuid.uuid4().hex[:12]}"
        race = Race(order_id, ["A", "B"])
        group = f"orchestrator-{env.run_id}"
        workers = [orchestrator_worker(orchestrator, n, group=group, wrap_sagas=race.repository(n)) for n in "AB"]
        inventory = inventory_worker(inventory_settings, "inventory", group=f"inventory-{env.run_id}")
        producer = new_producer(orchestrator)
        sagas = env.db("orchestrator")["sagas"]
        timers = env.db("orchestrator")["saga_timers"]
        stock = env.db("inventory")["stock"]
        reservations = env.db("inventory")["reservations"]
        with running(inventory, *workers):
            try:
                wait_until(lambda: group_split(orchestrator, workers), what="the two workers to share the partitions")
                items = [{"product_id": PRODUCT, "quantity": QUANTITY, "price": PRICE}]
                produce_into(producer, orchestrator, order_created(order_id, items=items, total_amount=TOTAL))
                before = wait_until(
                    lambda: sagas.find_one({"_id": order_id, "state": "awaiting_payment", "outbox": {}}),
                    what="the saga to await its payment",
                )
                home = next(w for w in workers if _handled(w, "InventoryReserved"))
                other = next(w for w in workers if w is not home)
                cancel_worker, payment_worker = (home, other) if cancel_at == "home" else (other, home)

                race.arm()
                cancel = reply("OrderCancelRequested", order_id)
                payment = reply("PaymentCompleted", order_id, amount=TOTAL)
                produce_into(producer, orchestrator, cancel, cancel_worker.owns(orchestrator, cancel.topic)[0])
                produce_into(producer, orchestrator, payment, payment_worker.owns(orchestrator, payment.topic)[0])
                wait_until(
                    lambda: all(e.is_set() for e in race.arrived.values()), what="both workers to decide the saga"
                )
                # Both decided on the saga as it was stored before either event.
                assert {s.version for s in race.decided.values()} == {before["version"]}
                assert race.decided[cancel_worker.name].state == "compensating"
                assert race.decided[payment_worker.name].state == "completed"

                winner, loser = (
                    (cancel_worker, payment_worker) if first == "cancel" else (payment_worker, cancel_worker)
                )
                race.go[winner.name].set()
                assert race.wrote[winner.name].wait(15), "the first write did not return"
                race.go[loser.name].set()
                assert race.wrote[loser.name].wait(15), "the second write did not return"
                assert race.landed == {winner.name: True, loser.name: False}, "the race did not happen"

                if first == "cancel":
                    done = {"_id": order_id, "state": "failed", "outbox": {}}
                else:
                    done = {"_id": order_id, "state": "completed", "steps.step": "commit_inventory", "outbox": {}}
                done_status = "released" if first == "cancel" else "committed"
                wait_until(lambda: sagas.find_one(done), what=f"the saga to end ({first} first)")
                wait_until(
                    lambda: reservations.find_one({"_id": f"res_{order_id}", "status": done_status, "outbox": {}}),
                    what=f"the reservation to be {done_status} and its reply published",
                )
                outcome = _outcome(env, orchestrator, order_id)
                _check(first, outcome, cancel, payment, stock.find_one({"_id": PRODUCT}))
                assert timers.find_one({"_id": order_id}) is None, "a finished saga kept a deadline"

                # The same two events again, each to the worker that did not get it, and the
                # payment service's report of the same charge under a new event id: nothing changes.
                # One at a time, so that the worker holding an outdated copy of the saga is the last.
                again = reply("PaymentCompleted", order_id, amount=TOTAL)
                produce_into(producer, orchestrator, payment, cancel_worker.owns(orchestrator, payment.topic)[0])
                wait_until(
                    lambda: payment.event_id in cancel_worker.handled, what="the payment to reach the other worker"
                )
                produce_into(producer, orchestrator, again)
                wait_until(
                    lambda: sagas.find_one({"_id": order_id, "handled_events": again.event_id, "outbox": {}}),
                    what="the second charge report to be handled",
                )
                produce_into(producer, orchestrator, cancel, payment_worker.owns(orchestrator, cancel.topic)[0])
                wait_until(
                    lambda: cancel.event_id in payment_worker.handled, what="the cancel to reach the other worker"
                )
                assert _outcome(env, orchestrator, order_id)["types"] == outcome["types"]
                _check(first, _outcome(env, orchestrator, order_id), cancel, payment, stock.find_one({"_id": PRODUCT}))
                assert dead_letters(orchestrator) == []
                # A redelivery decided on an outdated cached copy must not give the finished saga back a deadline.
                timer = timers.find_one({"_id": order_id})
                if timer is not None:
                    raise FinishedSagaKeptDeadline(f"a redelivery gave the {first} saga a deadline: {timer}")
            finally:
                race.release_all()


def _outcome(env: Any, settings: Any, order_id: str) -> dict[str, Any]:
    events = [e for e in read_events(settings, SAGA_OUTPUT_TOPICS) if e.order_id == order_id]
    saga = env.db("orchestrator")["sagas"].find_one({"_id": order_id})
    return {"events": events, "types": count_types(events), "saga": saga}


def _check(first: str, outcome: dict[str, Any], cancel: Envelope, payment: Envelope, product: dict) -> None:
    saga, types, events = outcome["saga"], outcome["types"], outcome["events"]
    steps = [(s["step"], s["status"]) for s in saga["steps"]]
    assert saga["handled_events"].count(cancel.event_id) == 1
    assert saga["handled_events"].count(payment.event_id) == 1
    common = {"OrderValidated": 1, "ReserveInventory": 1, "PaymentRequested": 1, "NotificationRequested": 1}
    if first == "cancel":
        assert (saga["state"], saga["failure_reason"], saga["refund_requested"]) == ("failed", "cancelled", True)
        assert dict(types) == {**common, "ReleaseInventory": 1, "RefundRequested": 1, "OrderFailed": 1}, types
        refund = next(e for e in events if e.event_type == "RefundRequested")
        assert refund.data == {"payment_id": saga["payment_id"], "reason": "cancelled"}
        assert refund.causation_id == payment.event_id
        assert ("refund_payment", "started") in steps
        assert steps.count(("release_inventory", "started")) == 1
        assert (product["available"], product["reserved"], product["sold"]) == (STOCK, 0, 0)
    else:
        assert (saga["state"], saga["refund_requested"]) == ("completed", False)
        assert dict(types) == {**common, "CommitInventory": 1, "OrderCompleted": 1}, types
        assert ("OrderCancelRequested", "ignored") in steps
        assert ("release_inventory", "started") not in steps
        assert (product["available"], product["reserved"], product["sold"]) == (STOCK - QUANTITY, 0, QUANTITY)
