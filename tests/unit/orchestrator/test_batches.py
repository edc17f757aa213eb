"""The orchestrator worker's batches: the same sagas, events and timers as one event after another,
with every saga of a batch written in one bulk write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from services.orchestrator.app import bootstrap
from services.orchestrator.handlers import HANDLERS, handle_batch
from shared.config import Settings
from shared.events import Envelope
from tests.unit.batches import one_by_one
from tests.unit.orchestrator.fakes import (
    ConflictingSagaRepository,
    FakeClock,
    InMemorySagaRepository,
    order_created,
    reply,
)


def outcome(repo: InMemorySagaRepository) -> tuple[object, ...]:
    """Everything events can change. Versions are left out: they count writes, which batches save."""
    sagas = {oid: replace(s, version=0) for oid, s in repo.sagas.items()}
    # Emitted events get fresh ids; what they say, and what caused them, is what counts.
    written = [(e.order_id, e.event_type, repr(e.data), e.causation_id) for e in repo.written]
    return sagas, sorted(written), repo.timers


CREATED = {oid: order_created(oid) for oid in ("o-1", "o-2", "o-3")}
RESERVED = {oid: reply("InventoryReserved", oid) for oid in ("o-1", "o-2", "o-3")}

# (events applied one by one first, then the batch)
SCENARIOS: dict[str, tuple[list[Envelope], list[Envelope]]] = {
    "new orders, one of them invalid": (
        [],
        [CREATED["o-1"], CREATED["o-2"], order_created("o-bad", items=[])],
    ),
    "replies to several sagas": (
        [CREATED["o-1"], CREATED["o-2"], CREATED["o-3"], RESERVED["o-2"], RESERVED["o-3"]],
        [
            RESERVED["o-1"],
            reply("PaymentCompleted", "o-2"),
            reply("PaymentFailed", "o-3"),
        ],
    ),
    "a whole saga in one batch": (
        [],
        [
            CREATED["o-1"],
            RESERVED["o-1"],
            reply("PaymentCompleted", "o-1"),
            reply("InventoryCommitted", "o-1"),
        ],
    ),
    "a payment failure compensated and released in one batch": (
        [CREATED["o-1"], RESERVED["o-1"]],
        [reply("PaymentFailed", "o-1"), reply("InventoryReleased", "o-1")],
    ),
    "redeliveries, a cancel before its order and a reply without a saga": (
        [CREATED["o-1"], RESERVED["o-1"]],
        [
            RESERVED["o-1"],
            CREATED["o-1"],
            order_created("o-1"),  # published twice by the order service: a new event, same order
            reply("OrderCancelRequested", "o-2"),
            reply("PaymentCompleted", "o-9"),
        ],
    ),
    "an order created again for an existing saga (the insert fails, the saga is read)": (
        [CREATED["o-1"]],
        [order_created("o-1"), CREATED["o-2"]],
    ),
    "an invalid reply to a failed saga, after its redelivered OrderCreated": (
        [CREATED["o-1"], reply("InventoryReservationFailed", "o-1")],
        [CREATED["o-1"], reply("InventoryReservationFailed", "o-1", reason="no-such-reason")],
    ),
    "a cancel, then its order, in one batch": (
        [],
        [reply("OrderCancelRequested", "o-1"), CREATED["o-1"]],
    ),
    "an event that breaks the contract among good ones": (
        [CREATED["o-1"], CREATED["o-2"]],
        [
            reply("InventoryReservationFailed", "o-1", reason="no-such-reason"),
            RESERVED["o-1"],
            reply("InventoryReserved", "o-2", reservation_id=None),
            RESERVED["o-2"],
        ],
    ),
}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("orchestrator", saga={"payment_timeout_s": 60, "order_timeout_s": 300})


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_batch_ends_as_the_same_events_one_by_one(settings: Settings, name: str) -> None:
    setup, batch = SCENARIOS[name]
    alone_repo, batch_repo = InMemorySagaRepository(), InMemorySagaRepository()
    alone = bootstrap(settings, sagas=alone_repo, clock=FakeClock())
    batched = bootstrap(settings, sagas=batch_repo, clock=FakeClock())
    one_by_one(HANDLERS, alone, setup)
    one_by_one(HANDLERS, batched, setup)
    writes_before = batch_repo.bulk_writes

    refused_alone = set(one_by_one(HANDLERS, alone, batch))
    refused_batched = set(handle_batch(batched, batch))

    assert outcome(batch_repo) == outcome(alone_repo)
    assert refused_batched == refused_alone
    assert batch_repo.bulk_writes == writes_before + 1


def test_each_saga_of_a_batch_is_written_once_with_all_its_events(settings: Settings) -> None:
    repo = InMemorySagaRepository()
    service = bootstrap(settings, sagas=repo, clock=FakeClock())

    handle_batch(service, [CREATED["o-1"], RESERVED["o-1"], reply("PaymentCompleted", "o-1"), CREATED["o-2"]])

    assert repo.get("o-1").version == 1
    assert repo.get("o-1").state == "completed"
    assert repo.types_for("o-1") == [
        "OrderValidated",
        "ReserveInventory",
        "PaymentRequested",
        "CommitInventory",
        "OrderCompleted",
        "NotificationRequested",
    ]
    assert repo.get("o-2").version == 1


def test_a_saga_another_writer_changed_is_decided_again_on_a_fresh_read(settings: Settings) -> None:
    alone_repo, batch_repo = InMemorySagaRepository(), ConflictingSagaRepository(conflicts=0)
    alone = bootstrap(settings, sagas=alone_repo, clock=FakeClock())
    batched = bootstrap(settings, sagas=batch_repo, clock=FakeClock())
    setup = [CREATED["o-1"], CREATED["o-2"]]
    one_by_one(HANDLERS, alone, setup)
    one_by_one(HANDLERS, batched, setup)
    batch_repo.conflicts_left = 1  # the first update of the batch loses to a concurrent writer

    one_by_one(HANDLERS, alone, [RESERVED["o-1"], RESERVED["o-2"]])
    handle_batch(batched, [RESERVED["o-1"], RESERVED["o-2"]])

    assert batch_repo.conflicts_seen == 1
    assert outcome(batch_repo) == outcome(alone_repo)
