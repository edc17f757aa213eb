"""The Mongo saga repository on the real FerretDB: the contract, the outbox, concurrency and timers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo.collection import Collection
from pymongo.database import Database

from services.orchestrator import transitions
from services.orchestrator.app import bootstrap
from services.orchestrator.mongo import MongoSagaRepository
from services.orchestrator.ports import SagaWrite
from services.orchestrator.saga import Context
from shared.config import Settings
from shared.write_behind import WriteBehind
from tests.unit.orchestrator.contract import TIMEOUTS, SagaRepositoryContract, new_saga
from tests.unit.orchestrator.fakes import T0, FakeClock, order_created, reply


class RecordingRelay:
    """Stands in for the outbox relay: remembers which documents it was told about."""

    def __init__(self) -> None:
        self.notified: list[Any] = []
        self.events: list[Any] = []

    def notify(self, collection: Collection, doc_id: Any, events: Any = None) -> None:
        self.notified.append(doc_id)
        self.events.extend(events or [])


def make_repo(db: Database, relay: RecordingRelay | None = None) -> MongoSagaRepository:
    repo = MongoSagaRepository(db["sagas"], db["saga_timers"], relay)  # type: ignore[arg-type]
    repo.ensure_indexes()
    return repo


class TestMongoSagaRepository(SagaRepositoryContract):
    """The whole contract. The versioned update alone keeps concurrent writers apart (see
    test_two_concurrent_updaters_lose_no_update)."""

    @pytest.fixture(autouse=True)
    def _database(self, mongo_db: Database) -> None:
        self.db = mongo_db

    def make_repo(self) -> MongoSagaRepository:
        return make_repo(self.db)


class TestMongoSagaRepositoryWithCache(TestMongoSagaRepository):
    """The worker's configuration: the sagas it wrote are kept in memory."""

    def make_repo(self) -> MongoSagaRepository:
        repo = MongoSagaRepository(self.db["sagas"], self.db["saga_timers"], cache_size=100)
        repo.ensure_indexes()
        return repo


def _saga_reads() -> float:
    return REGISTRY.get_sample_value("mongo_commands_total", {"command": "find", "collection": "sagas"}) or 0.0


def test_a_cached_saga_is_not_read_back_and_a_stale_copy_is_dropped(mongo_db: Database) -> None:
    worker = MongoSagaRepository(mongo_db["sagas"], mongo_db["saga_timers"], cache_size=10)
    other = make_repo(mongo_db)  # another process writing the same saga
    created, events = new_saga("o-1")
    worker.create(created, events)
    reads = _saga_reads()
    moved = transitions.apply(worker.get("o-1"), reply("InventoryReserved", "o-1"), Context(T0, TIMEOUTS))
    assert worker.update(moved.saga, moved.events)
    assert worker.get("o-1") == other.get("o-1")  # the copy is what the store holds
    assert _saga_reads() == reads + 1  # only the other repository read

    stale = worker.get("o-1")
    advanced = transitions.apply(other.get("o-1"), reply("PaymentRefunded", "o-1"), Context(T0, TIMEOUTS))
    assert other.update(advanced.saga, advanced.events)
    again = transitions.apply(stale, reply("PaymentRefunded", "o-1"), Context(T0, TIMEOUTS))
    assert not worker.update(again.saga, again.events)  # the stale copy loses the version check
    assert worker.get("o-1").version == other.get("o-1").version == 3


def test_each_write_puts_its_events_in_the_saga_outbox_and_tells_the_relay(mongo_db: Database) -> None:
    relay = RecordingRelay()
    repo = make_repo(mongo_db, relay)
    created, events = new_saga("o-1")
    repo.create(created, events)
    moved = transitions.apply(repo.get("o-1"), reply("InventoryReserved", "o-1"), Context(T0, TIMEOUTS))
    repo.update(moved.saga, moved.events)

    outbox = mongo_db["sagas"].find_one({"_id": "o-1"})["outbox"]

    assert sorted(e["event_type"] for e in outbox.values()) == [
        "OrderValidated",
        "PaymentRequested",
        "ReserveInventory",
    ]
    assert all(event_id == e["event_id"] for event_id, e in outbox.items())
    assert relay.notified == ["o-1", "o-1"]
    assert {e.event_id for e in relay.events} == set(outbox)  # handed over as written: no read-back
    assert repo.get("o-1").version == 2


def _saga_commands(command: str) -> float:
    return REGISTRY.get_sample_value("mongo_commands_total", {"command": command, "collection": "sagas"}) or 0.0


def test_write_many_writes_a_chunk_of_sagas_per_round_trip_and_hands_on_only_what_landed(mongo_db: Database) -> None:
    """60 new sagas, then 60 updates of which one is stale: two inserts and two updates (chunks of 50);
    the stale one's read-back tells it from the others, and only the landed events reach the relay."""
    relay = RecordingRelay()
    repo = make_repo(mongo_db, relay)
    started = [new_saga(f"o-{n}") for n in range(60)]
    inserts = _saga_commands("insert")

    assert repo.write_many([SagaWrite(saga, tuple(events), new=True) for saga, events in started]) == [True] * 60
    assert _saga_commands("insert") == inserts + 2

    ctx = Context(T0, TIMEOUTS)
    moves = [transitions.apply(repo.get(f"o-{n}"), reply("InventoryReserved", f"o-{n}"), ctx) for n in range(60)]
    other = transitions.apply(repo.get("o-7"), reply("OrderCancelRequested", "o-7"), ctx)
    assert repo.update(other.saga, other.events)  # another writer moves o-7 first
    relay.events.clear()
    updates, reads = _saga_commands("update"), _saga_reads()

    landed = repo.write_many([SagaWrite(move.saga, move.events, new=False) for move in moves])

    assert landed == [n != 7 for n in range(60)]
    assert _saga_commands("update") == updates + 2
    assert _saga_reads() == reads + 50  # the chunk with the stale write is read back, the other is not
    assert repo.get("o-7").state == "compensating"
    assert repo.get("o-8").state == "awaiting_payment" and repo.get("o-8").version == 2
    handed_on = {event.event_id for event in relay.events}
    assert handed_on == {event.event_id for n, move in enumerate(moves) if n != 7 for event in move.events}


def test_two_concurrent_updaters_lose_no_update(service_settings: Callable[..., Settings], mongo_db: Database) -> None:
    settings = service_settings("orchestrator")
    first = bootstrap(settings, sagas=make_repo(mongo_db), clock=FakeClock())
    second = bootstrap(settings, sagas=make_repo(mongo_db), clock=FakeClock())
    first.start(order_created("o-1"))
    # Events the saga only records (no refund was requested): each one is one conditional update.
    batches = [[reply("PaymentRefunded", "o-1") for _ in range(10)] for _ in range(2)]
    errors: list[BaseException] = []

    def apply_all(service: Any, events: list) -> None:
        try:
            for event in events:
                service.advance(event)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=apply_all, args=(s, b)) for s, b in zip((first, second), batches, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    saga = first.flow("o-1")
    assert errors == []
    assert saga.version == 1 + 20
    assert {e.event_id for batch in batches for e in batch} <= set(saga.handled_events)
    assert sum(1 for s in saga.steps if s.status == "ignored") == 20


def test_a_stale_version_loses_on_the_real_server(mongo_db: Database) -> None:
    repo = make_repo(mongo_db)
    created, events = new_saga("o-1")
    repo.create(created, events)
    stale = repo.get("o-1")
    ctx = Context(T0, TIMEOUTS)
    winner = transitions.apply(stale, reply("InventoryReserved", "o-1"), ctx)
    loser = transitions.apply(stale, reply("OrderCancelRequested", "o-1"), ctx)

    assert repo.update(winner.saga, winner.events) is True
    assert repo.update(loser.saga, loser.events) is False
    outbox = mongo_db["sagas"].find_one({"_id": "o-1"})["outbox"]
    assert "ReleaseInventory" not in {e["event_type"] for e in outbox.values()}


def test_the_timer_job_of_a_restarted_service_finds_a_due_saga(
    service_settings: Callable[..., Settings], mongo_db: Database
) -> None:
    settings = service_settings("orchestrator", saga={"payment_timeout_s": 60, "order_timeout_s": 300})
    clock = FakeClock()
    before_restart = bootstrap(settings, sagas=make_repo(mongo_db), clock=clock)
    before_restart.start(order_created("o-1"))
    before_restart.advance(reply("InventoryReserved", "o-1"))
    assert mongo_db["saga_timers"].find_one({"_id": "o-1"})["kind"] == "payment"

    clock.advance(61)
    after_restart = bootstrap(settings, sagas=make_repo(mongo_db), clock=clock)

    assert after_restart.fire_due_timers() == 1
    doc = mongo_db["sagas"].find_one({"_id": "o-1"})
    assert (doc["state"], doc["failure_reason"]) == ("compensating", "payment_timeout")
    assert "ReleaseInventory" in {e["event_type"] for e in doc["outbox"].values()}
    assert mongo_db["saga_timers"].find_one({"_id": "o-1"})["kind"] == "compensation"
    assert after_restart.fire_due_timers() == 0


def test_reconciling_restores_a_lost_timer_on_the_real_server(
    service_settings: Callable[..., Settings], mongo_db: Database
) -> None:
    service = bootstrap(service_settings("orchestrator"), sagas=make_repo(mongo_db), clock=FakeClock())
    service.start(order_created("o-1"))
    mongo_db["saga_timers"].delete_many({})

    assert service.reconcile_timers() == 1
    assert mongo_db["saga_timers"].find_one({"_id": "o-1"})["kind"] == "order"


def test_the_relays_outbox_cleanup_never_undoes_a_concurrent_saga_update(
    service_settings: Callable[..., Settings], mongo_db: Database
) -> None:
    repo = make_repo(mongo_db)
    service = bootstrap(service_settings("orchestrator"), sagas=repo, clock=FakeClock())
    service.start(order_created("o-1"))
    # Published entries waiting for the relay's clean-up, as after a burst of events.
    published = [f"e{n}" for n in range(200)]
    mongo_db["sagas"].update_one({"_id": "o-1"}, {"$set": {f"outbox.{k}": {"sent": True} for k in published}})
    events = [reply("PaymentRefunded", "o-1") for _ in range(15)]
    done = threading.Event()

    def clean_outbox() -> None:
        for key in published:
            if done.is_set():
                return
            mongo_db["sagas"].update_one({"_id": "o-1"}, {"$unset": {f"outbox.{key}": ""}})

    cleaner = threading.Thread(target=clean_outbox)
    cleaner.start()
    try:
        for event in events:
            service.advance(event)
    finally:
        done.set()
        cleaner.join(timeout=30)

    saga = service.flow("o-1")
    assert saga.version == 1 + len(events)
    assert {e.event_id for e in events} <= set(saga.handled_events)


def test_timer_writes_that_wait_are_coalesced_and_seen_by_the_timer_job(
    service_settings: Callable[..., Settings], mongo_db: Database
) -> None:
    settings = service_settings("orchestrator", saga={"payment_timeout_s": 60, "order_timeout_s": 300})
    clock = FakeClock()
    timer_writes = WriteBehind(mongo_db["saga_timers"])  # flushed only when asked
    repo = MongoSagaRepository(mongo_db["sagas"], mongo_db["saga_timers"], timer_writes=timer_writes)
    service = bootstrap(settings, sagas=repo, clock=clock)
    service.start(order_created("o-1"))
    service.advance(reply("InventoryReserved", "o-1"))
    service.start(order_created("o-2"))
    assert mongo_db["saga_timers"].count_documents({}) == 0  # nothing written yet
    assert set(timer_writes.pending()) == {"o-1", "o-2"}  # o-1's timer was set twice: only its latest waits

    clock.advance(61)
    assert service.fire_due_timers() == 1  # the job writes what waits before it reads the due timers
    assert mongo_db["saga_timers"].find_one({"_id": "o-1"})["kind"] == "payment"
    assert mongo_db["sagas"].find_one({"_id": "o-1"})["failure_reason"] == "payment_timeout"
    timer_writes.flush()
    assert mongo_db["saga_timers"].find_one({"_id": "o-1"})["kind"] == "compensation"


def test_a_crash_that_loses_waiting_timer_writes_is_repaired_by_reconciling(
    service_settings: Callable[..., Settings], mongo_db: Database
) -> None:
    settings = service_settings("orchestrator")
    lost = WriteBehind(mongo_db["saga_timers"])
    crashed = MongoSagaRepository(mongo_db["sagas"], mongo_db["saga_timers"], timer_writes=lost)
    bootstrap(settings, sagas=crashed, clock=FakeClock()).start(order_created("o-1"))  # then the process dies

    after_restart = bootstrap(settings, sagas=make_repo(mongo_db), clock=FakeClock())
    assert after_restart.reconcile_timers() == 1
    assert mongo_db["saga_timers"].find_one({"_id": "o-1"})["kind"] == "order"


def legacy_saga(order_id: str, state: str, card: str | None) -> dict[str, Any]:
    """A saga document as the versions before the card vault wrote it: the number in clear."""
    order = {
        "customer_id": "cust-1",
        "customer_email": None,
        "items": [
            {"product_id": "p-1", "quantity": 2, "price": 10.0},
            {"product_id": "p-2", "quantity": 1, "price": 5.5},
        ],
        "total_amount": 25.5,
        "payment_method": "credit_card",
        "card_details": {"number": card} if card else None,
    }
    return {
        "_id": order_id,
        "state": state,
        "order": order,
        "reservation_id": f"res_{order_id}",
        "payment_id": None,
        "steps": [],
        "handled_events": [],
        "attempts": {},
        "version": 3,
        "created_at": T0,
        "updated_at": T0,
        "outbox": {},
    }


def test_the_scrub_removes_card_numbers_of_earlier_versions_and_their_sagas_cannot_charge_them(
    mongo_db: Database,
) -> None:
    card = "4111111111111111"
    mongo_db["sagas"].insert_many(
        [
            legacy_saga("o-reserving", "reserving", card),
            legacy_saga("o-failed", "failed", card),
            legacy_saga("o-paid", "completed", None),  # asked for its payment: the number was dropped then
        ]
    )
    repo = make_repo(mongo_db)
    assert repo.scrub_card_numbers() == 2
    assert repo.scrub_card_numbers() == 0
    docs = {doc["_id"]: doc for doc in mongo_db["sagas"].find()}
    assert card not in repr(docs)
    assert (docs["o-reserving"]["version"], docs["o-paid"]["version"]) == (4, 3)
    saga = repo.get("o-reserving")
    assert saga.order.payment_method_token == "pm_withdrawn"
    reserved = transitions.apply(saga, reply("InventoryReserved", "o-reserving"), Context(T0, TIMEOUTS))
    [payment] = [e for e in reserved.events if e.event_type == "PaymentRequested"]
    assert payment.data["payment_method_token"] == "pm_withdrawn"
    assert card not in repr(reserved)
