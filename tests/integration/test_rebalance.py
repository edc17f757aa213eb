"""A consumer group rebalances while a worker is in the middle of a batch, on the real Kafka and FerretDB.

Revoked mid-batch: worker A has fetched a batch and is held in it (before its batch handler, or
after it has written and before the offsets are stored) while worker B joins. A does not poll, so
after its max.poll.interval A leaves the group, B is given every partition and reads A's batch
again from the last committed offsets; then A is let go and finishes the batch it no longer owns.
This is what a worker stuck in a batch does in production, where the handler waits out a database
outage without polling for up to the 15-minute max.poll.interval (the tests use 6 s). Every event
is delivered twice; each saga and each reservation must be applied once.

Joined mid-batch: B joins while A is held in its batch, with the deployed consumer settings. The
rebalance waits for A to finish and poll; the offsets A stored for its batch are committed when its
partitions are revoked (by librdkafka's auto-commit, and by ConsumerRunner's on_revoke), and B
starts after them: nothing is handled twice, nothing is lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from shared.config import Settings
from shared.events import Envelope
from shared.kafka_utils import client_config
from tests.integration.harness import (
    Hold,
    Isolated,
    Worker,
    count_types,
    dead_letters,
    group_owns_all,
    group_split,
    impatient_consumer,
    inventory_worker,
    isolated,
    new_producer,
    orchestrator_worker,
    produce_into,
    read_events,
    running,
    wait_until,
)
from tests.unit.orchestrator.fakes import order_created

ORDERS = 20
PRODUCT, PRICE, STOCK = "mouse", 29.99, 1000  # from the catalogue inventory seeds
MAX_POLL_MS = 6000  # the least the broker allows a session, which max.poll.interval.ms may not undercut
SAGA_STEPS = [
    ("validate_order", "completed"),
    ("reserve_inventory", "started"),
    ("reserve_inventory", "completed"),
    ("take_payment", "started"),
]


def _orders(n: int) -> list[Envelope]:
    items = [{"product_id": PRODUCT, "quantity": 1, "price": PRICE}]
    return [order_created(f"order-{uuid.uuid4().hex[:12]}", items=items, total_amount=PRICE) for _ in range(n)]


def _a_batch_of(event_type: str) -> Callable[[Sequence[Envelope]], bool]:
    """Whether a batch holds more than one event of ``event_type``. The first batch after a start may
    hold the events of only some partitions (their offsets are looked up one by one), but one of
    the six partitions has at least four of the twenty events, and they come in one fetch."""
    return lambda events: sum(e.event_type == event_type for e in events) > 1


def _revoke_mid_batch(settings: Settings, a: Worker, b: Worker, hold: Hold) -> list[str]:
    """With A held in its first batch, start B and wait until A has been put out of the group and B
    has handled A's batch again; let A go and wait until the two share the partitions. Return the
    ids of A's batch."""
    wait_until(hold.reached.is_set, what="worker A to hold a batch")
    held = [event.event_id for event in hold.held]
    assert a.owns(settings, hold.held[0].topic), "A should own its batch's partitions while it handles it"
    b.start()
    wait_until(lambda: group_owns_all(settings, b), timeout=MAX_POLL_MS / 1000 + 15, what="B to take every partition")
    wait_until(lambda: set(held) <= set(b.handled), what="B to handle A's batch again")
    hold.release()
    wait_until(lambda: group_split(settings, [a, b]), what="A to rejoin the group")
    return held


@pytest.mark.parametrize("hold_at", ["before", "after"])
def test_an_orchestrator_worker_revoked_mid_batch_applies_no_saga_twice(hold_at: str) -> None:
    """``hold_at``: A is held before its batch handler (B writes first, A's writes are the
    duplicates) or after it (A's sagas are written, B's are the duplicates)."""
    with isolated("rebal") as env:
        settings = env.settings("orchestrator")
        group = f"orchestrator-{env.run_id}"
        orders = _orders(ORDERS)
        ids = [order.order_id for order in orders]
        producer = new_producer(settings)
        for order in orders:  # all there before A starts, so that A fetches them together
            produce_into(producer, settings, order)

        hold = Hold(_a_batch_of("OrderCreated"))
        consumer = impatient_consumer(settings, group, f"{group}-A", MAX_POLL_MS)
        a = orchestrator_worker(settings, "A", group=group, consumer=consumer)
        (a.before if hold_at == "before" else a.after).append(hold)
        b = orchestrator_worker(settings, "B", group=group)
        inventory = inventory_worker(env.settings("inventory"), "inventory", group=f"inventory-{env.run_id}")
        sagas = env.db("orchestrator")["sagas"]
        with running(inventory, a):
            try:
                held = _revoke_mid_batch(settings, a, b, hold)
                wait_until(lambda: set(held) <= set(a.handled), what="A to finish its batch")
                # Every saga reserved its stock once and asks for its payment.
                wait_until(
                    lambda: (
                        sagas.count_documents({"_id": {"$in": ids}, "state": "awaiting_payment", "outbox": {}})
                        == ORDERS
                    ),
                    what="every saga to await its payment",
                )
            finally:
                hold.release()
                b.stop()

        for saga in sagas.find({"_id": {"$in": ids}}):
            assert [(s["step"], s["status"]) for s in saga["steps"]] == SAGA_STEPS, saga["steps"]
            assert saga["version"] == 2, f"saga {saga['_id']} was written {saga['version']} times"
        events = read_events(settings, ["inventory.commands", "orders.validated", "payments.requested"])
        for order_id in ids:
            expected = {"ReserveInventory": 1, "OrderValidated": 1, "PaymentRequested": 1}
            assert count_types(events, order_id) == expected, order_id
        _check_stock(env, ids)
        assert dead_letters(settings) == []


@pytest.mark.parametrize("hold_at", ["before", "after"])
def test_an_inventory_worker_revoked_mid_batch_holds_no_stock_twice(hold_at: str) -> None:
    """The saga's ReserveInventory commands (the test plays the orchestrator), redelivered to the
    other worker while the first is still in its batch."""
    with isolated("rebal") as env:
        settings = env.settings("inventory")
        group = f"inventory-{env.run_id}"
        ids = [f"order-{uuid.uuid4().hex[:12]}" for _ in range(ORDERS)]
        producer = new_producer(settings)
        commands = [
            Envelope(
                "ReserveInventory",
                order_id,
                "orchestrator",
                {
                    "reservation_id": f"res_{order_id}",
                    "items": [{"product_id": PRODUCT, "quantity": 1, "price": PRICE}],
                },
            )
            for order_id in ids
        ]
        for command in commands:
            produce_into(producer, settings, command)

        hold = Hold(_a_batch_of("ReserveInventory"))
        consumer = impatient_consumer(settings, group, f"{group}-A", MAX_POLL_MS)
        a = inventory_worker(settings, "A", group=group, consumer=consumer)
        (a.before if hold_at == "before" else a.after).append(hold)
        b = inventory_worker(settings, "B", group=group)
        reservations = env.db("inventory")["reservations"]
        with running(a):
            try:
                held = _revoke_mid_batch(settings, a, b, hold)
                wait_until(lambda: set(held) <= set(a.handled), what="A to finish its batch")
                wait_until(
                    lambda: reservations.count_documents({"_id": {"$regex": "^res_"}, "outbox": {}}) == ORDERS,
                    what="every reservation's reply to be published",
                )
            finally:
                hold.release()
                b.stop()

        assert set(held) <= set(b.handled)
        assert reservations.count_documents({"status": "reserved"}) == ORDERS
        _check_stock(env, ids)
        replies = [e for e in read_events(settings, ["inventory.reserved"]) if e.order_id in set(ids)]
        # A reply sent again on a redelivery keeps its id: the saga drops it as already handled.
        by_order = {order_id: {e.event_id for e in replies if e.order_id == order_id} for order_id in ids}
        assert all(len(reply_ids) == 1 for reply_ids in by_order.values()), by_order
        assert not read_events(settings, ["inventory.reservation_failed"])
        assert dead_letters(settings) == []


def _check_stock(env: Isolated, ids: Sequence[str]) -> None:
    """Each order holds one unit, once."""
    product = env.db("inventory")["stock"].find_one({"_id": PRODUCT})
    assert (product["available"], product["reserved"]) == (STOCK - len(ids), len(ids)), product
    reservations = env.db("inventory")["reservations"]
    assert reservations.count_documents({"_id": {"$in": [f"res_{i}" for i in ids]}, "status": "reserved"}) == len(ids)


def _group_state(settings: Settings, group: str) -> ConsumerGroupState:
    admin = AdminClient(client_config(settings.kafka))
    return admin.describe_consumer_groups([group])[group].result(10).state


def test_a_worker_joining_while_another_is_mid_batch_gets_its_partitions_after_the_batch() -> None:
    with isolated("rebal") as env:
        settings = env.settings("orchestrator")
        group = f"orchestrator-{env.run_id}"
        first, second = _orders(ORDERS), _orders(ORDERS)
        ids = [order.order_id for order in first + second]
        producer = new_producer(settings)
        for order in first:
            produce_into(producer, settings, order)

        hold = Hold(_a_batch_of("OrderCreated"))
        a = orchestrator_worker(settings, "A", group=group)
        a.after.append(hold)
        b = orchestrator_worker(settings, "B", group=group)
        inventory = inventory_worker(env.settings("inventory"), "inventory", group=f"inventory-{env.run_id}")
        sagas = env.db("orchestrator")["sagas"]
        with running(inventory, a):
            try:
                wait_until(hold.reached.is_set, what="worker A to hold a batch")
                held = {event.event_id for event in hold.held}
                b.start()
                wait_until(
                    lambda: _group_state(settings, group) == ConsumerGroupState.PREPARING_REBALANCING,
                    what="B's join to start a rebalance",
                )
                assert not b.assignment(), "B got partitions while A was still in its batch"
                hold.release()
                wait_until(lambda: group_split(settings, [a, b]), what="A and B to share the partitions")
                for order in second:  # after the rebalance: both workers take part
                    produce_into(producer, settings, order)
                wait_until(
                    lambda: (
                        sagas.count_documents({"_id": {"$in": ids}, "state": "awaiting_payment", "outbox": {}})
                        == len(ids)
                    ),
                    what="every saga to await its payment",
                )
            finally:
                hold.release()
                b.stop()

        assert not held & set(b.seen), "B handled events of A's batch again: A's offsets were not committed"
        second_ids = {order.order_id for order in second}
        assert {event.order_id for batch in b.batches for event in batch} & second_ids, "B never took part"
        for saga in sagas.find({"_id": {"$in": ids}}):
            assert [(s["step"], s["status"]) for s in saga["steps"]] == SAGA_STEPS, saga["steps"]
            assert saga["version"] == 2
        events = read_events(settings, ["inventory.commands", "payments.requested"])
        for order_id in ids:
            assert count_types(events, order_id) == {"ReserveInventory": 1, "PaymentRequested": 1}, order_id
        _check_stock(env, ids)
        assert dead_letters(settings) == []
