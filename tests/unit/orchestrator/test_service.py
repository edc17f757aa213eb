"""The saga service over an in-memory repository: writes, timers, retries on conflicts, metrics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from services.orchestrator.app import bootstrap
from services.orchestrator.domain import SagaConflict, SagaNotFound
from services.orchestrator.ports import Timer
from services.orchestrator.service import SagaService
from shared.config import Settings
from tests.unit.orchestrator.fakes import (
    T0,
    ConflictingSagaRepository,
    FakeClock,
    InMemorySagaRepository,
    order_created,
    reply,
)

OID = "o-1"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("orchestrator", saga={"payment_timeout_s": 60, "order_timeout_s": 300})


@pytest.fixture
def repo() -> InMemorySagaRepository:
    return InMemorySagaRepository()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(settings: Settings, repo: InMemorySagaRepository, clock: FakeClock) -> SagaService:
    return bootstrap(settings, sagas=repo, clock=clock)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_happy_path_writes_every_event_once_in_order_and_drops_the_timer(
    service: SagaService, repo: InMemorySagaRepository
) -> None:
    completed_before = metric("sagas_completed_total")

    service.start(order_created(OID))
    assert repo.timers[OID].kind == "order"
    service.advance(reply("InventoryReserved", OID))
    assert repo.timers[OID] == Timer(OID, T0.replace(minute=1), "payment")
    service.advance(reply("PaymentCompleted", OID))

    assert repo.get(OID).state == "completed"
    assert repo.get(OID).version == 3
    assert repo.types_for(OID) == [
        "OrderValidated",
        "ReserveInventory",
        "PaymentRequested",
        "CommitInventory",
        "OrderCompleted",
        "NotificationRequested",
    ]
    assert OID not in repo.timers
    assert metric("sagas_completed_total") == completed_before + 1


def test_an_invalid_order_fails_at_once_without_a_timer(service: SagaService, repo: InMemorySagaRepository) -> None:
    failed_before = metric("sagas_failed_total", reason="invalid_order")

    service.start(order_created(OID, total_amount=1.0))

    assert repo.get(OID).failure_reason == "invalid_order"
    assert repo.types_for(OID) == ["OrderFailed", "NotificationRequested"]
    assert repo.timers == {}
    assert metric("sagas_failed_total", reason="invalid_order") == failed_before + 1


def test_a_second_order_created_for_an_existing_saga_is_a_no_op(
    service: SagaService, repo: InMemorySagaRepository
) -> None:
    created = order_created(OID)
    service.start(created)

    service.start(created)
    service.start(order_created(OID))

    assert repo.types_for(OID) == ["OrderValidated", "ReserveInventory"]
    assert repo.get(OID).steps[-1].status == "ignored"


def test_a_new_saga_is_inserted_without_reading_first(
    service: SagaService, repo: InMemorySagaRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real_get = repo.get
    monkeypatch.setattr(repo, "get", lambda order_id: reads.append(order_id) or real_get(order_id))

    service.start(order_created(OID))
    assert reads == []
    assert repo.types_for(OID) == ["OrderValidated", "ReserveInventory"]

    service.start(order_created(OID))  # there is one now: the insert fails and the saga is read
    assert reads == [OID]
    assert repo.types_for(OID) == ["OrderValidated", "ReserveInventory"]


def test_duplicate_events_write_nothing(service: SagaService, repo: InMemorySagaRepository) -> None:
    service.start(order_created(OID))
    reserved = reply("InventoryReserved", OID)
    service.advance(reserved)
    version = repo.get(OID).version

    service.advance(reserved)

    assert repo.get(OID).version == version
    assert repo.types_for(OID).count("PaymentRequested") == 1


def test_a_missed_payment_deadline_is_found_by_the_timer_job(
    service: SagaService, repo: InMemorySagaRepository, clock: FakeClock
) -> None:
    service.start(order_created(OID))
    service.advance(reply("InventoryReserved", OID))

    clock.advance(59)
    assert service.fire_due_timers() == 0
    clock.advance(1)
    assert service.fire_due_timers() == 1

    saga = repo.get(OID)
    assert (saga.state, saga.failure_reason) == ("compensating", "payment_timeout")
    assert repo.types_for(OID)[-1] == "ReleaseInventory"
    assert repo.timers[OID].kind == "compensation"
    service.advance(reply("InventoryReleased", OID))
    assert (repo.get(OID).state, repo.get(OID).failure_reason) == ("failed", "payment_timeout")
    assert OID not in repo.timers


def test_a_saga_that_breaks_its_timer_does_not_stop_the_other_timers(
    service: SagaService, repo: InMemorySagaRepository, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for order_id in ("broken", "fine"):
        service.start(order_created(order_id))
        service.advance(reply("InventoryReserved", order_id))
    read = repo.get

    def get(order_id: str, **_options: bool):
        if order_id == "broken":
            raise KeyError("state")  # a document that no longer maps to a saga
        return read(order_id)

    monkeypatch.setattr(repo, "get", get)
    clock.advance(60)
    assert service.fire_due_timers() == 1
    assert read("fine").failure_reason == "payment_timeout"


def test_an_outage_stops_the_timer_pass_for_the_next_one_to_retry(
    service: SagaService, repo: InMemorySagaRepository, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    class StoreAway(Exception):
        transient = True  # what shared.mongo.is_transient honours, as for a lost connection

    service.start(order_created(OID))
    service.advance(reply("InventoryReserved", OID))
    monkeypatch.setattr(repo, "get", lambda _order_id: (_ for _ in ()).throw(StoreAway()))
    clock.advance(60)
    with pytest.raises(StoreAway):
        service.fire_due_timers()


def test_a_missed_order_deadline_releases_the_stock(
    service: SagaService, repo: InMemorySagaRepository, clock: FakeClock
) -> None:
    service.start(order_created(OID))

    clock.advance(300)
    service.fire_due_timers()

    assert repo.get(OID).failure_reason == "order_timeout"
    assert repo.types_for(OID)[-1] == "ReleaseInventory"


def test_a_compensation_nobody_answers_fails_after_the_grace_period(
    service: SagaService, repo: InMemorySagaRepository, clock: FakeClock
) -> None:
    service.start(order_created(OID))
    service.advance(reply("OrderCancelRequested", OID))

    clock.advance(359)
    service.fire_due_timers()
    assert repo.get(OID).state == "compensating"
    clock.advance(1)
    service.fire_due_timers()

    assert (repo.get(OID).state, repo.get(OID).failure_reason) == ("failed", "cancelled")
    assert repo.types_for(OID)[-2:] == ["OrderFailed", "NotificationRequested"]
    assert repo.timers == {}


def test_a_late_payment_after_a_timeout_requests_one_refund_even_if_delivered_twice(
    service: SagaService, repo: InMemorySagaRepository, clock: FakeClock
) -> None:
    refunds_before = metric("saga_refunds_total")
    service.start(order_created(OID))
    service.advance(reply("InventoryReserved", OID))
    clock.advance(60)
    service.fire_due_timers()
    late = reply("PaymentCompleted", OID)

    service.advance(late)
    service.advance(late)
    service.advance(reply("PaymentCompleted", OID))

    assert repo.types_for(OID).count("RefundRequested") == 1
    assert repo.get(OID).refund_requested is True
    assert metric("saga_refunds_total") == refunds_before + 1


def test_a_reservation_after_a_cancel_emits_nothing(service: SagaService, repo: InMemorySagaRepository) -> None:
    service.start(order_created(OID))
    service.advance(reply("OrderCancelRequested", OID))

    service.advance(reply("InventoryReserved", OID))

    assert repo.types_for(OID) == ["OrderValidated", "ReserveInventory", "ReleaseInventory"]
    assert repo.get(OID).state == "compensating"


def test_a_version_conflict_is_retried_on_the_reloaded_saga(settings: Settings, clock: FakeClock) -> None:
    repo = ConflictingSagaRepository(conflicts=1)
    service = bootstrap(settings, sagas=repo, clock=clock)
    service.start(order_created(OID))

    service.advance(reply("InventoryReserved", OID))

    assert repo.conflicts_seen == 1
    assert repo.get(OID).state == "awaiting_payment"
    assert repo.types_for(OID).count("PaymentRequested") == 1


def test_a_saga_that_keeps_changing_raises_so_the_runner_retries(settings: Settings, clock: FakeClock) -> None:
    repo = ConflictingSagaRepository(conflicts=100)
    service = bootstrap(settings, sagas=repo, clock=clock)
    service.start(order_created(OID))

    with pytest.raises(SagaConflict):
        service.advance(reply("InventoryReserved", OID))

    assert repo.types_for(OID) == ["OrderValidated", "ReserveInventory"]


def test_a_reply_for_an_order_without_a_saga_is_ignored(service: SagaService, repo: InMemorySagaRepository) -> None:
    assert service.advance(reply("PaymentCompleted", "nobody")) is None

    assert repo.sagas == {}


def test_a_cancel_before_order_created_fails_the_order_once_it_arrives(
    service: SagaService, repo: InMemorySagaRepository
) -> None:
    service.advance(reply("OrderCancelRequested", OID))
    assert repo.get(OID).state == "cancelled_early"

    service.start(order_created(OID))

    assert (repo.get(OID).state, repo.get(OID).failure_reason) == ("failed", "cancelled")
    assert repo.types_for(OID) == ["OrderFailed", "NotificationRequested"]
    assert repo.timers == {}


def test_a_stale_timer_is_moved_to_the_real_deadline(
    service: SagaService, repo: InMemorySagaRepository, clock: FakeClock
) -> None:
    service.start(order_created(OID))
    repo.set_timer(Timer(OID, T0, "order"))

    assert service.fire_due_timers() == 0

    assert repo.get(OID).state == "reserving"
    assert repo.timers[OID] == Timer(OID, repo.get(OID).order_deadline, "order")


def test_a_timer_without_a_saga_is_dropped(service: SagaService, repo: InMemorySagaRepository) -> None:
    repo.set_timer(Timer("ghost", T0, "order"))

    service.fire_due_timers()

    assert repo.timers == {}


def test_reconciling_restores_the_timer_of_an_active_saga_that_lost_it(
    service: SagaService, repo: InMemorySagaRepository
) -> None:
    service.start(order_created(OID))
    service.start(order_created("o-bad", items=[]))
    repo.clear_timer(OID)

    assert service.reconcile_timers() == 1

    assert repo.timers[OID].kind == "order"


def test_flows_are_listed_and_read_and_an_unknown_flow_is_not_found(service: SagaService) -> None:
    service.start(order_created(OID))

    assert [f.order_id for f in service.flows(None, 10)] == [OID]
    assert service.flow(OID).state == "reserving"
    assert service.deadlines(service.flow(OID))["next"].kind == "order"
    with pytest.raises(SagaNotFound):
        service.flow("nope")


def test_compensations_are_counted_by_reason(service: SagaService) -> None:
    before = metric("saga_compensations_total", reason="cancelled")
    service.start(order_created(OID))

    service.advance(reply("OrderCancelRequested", OID))

    assert metric("saga_compensations_total", reason="cancelled") == before + 1


def test_the_service_tells_when_a_saga_ends_and_how_long_it_took(
    settings: Settings, repo: InMemorySagaRepository, clock: FakeClock
) -> None:
    ended: list[tuple[datetime, datetime]] = []
    service = bootstrap(settings, sagas=repo, clock=clock, saga_ended=lambda start, end: ended.append((start, end)))

    service.start(order_created(OID))
    service.advance(reply("InventoryReserved", OID))
    clock.advance(5)
    service.advance(reply("PaymentCompleted", OID))
    service.advance(reply("PaymentCompleted", OID))  # a redelivery ends nothing

    assert ended == [(T0, T0 + timedelta(seconds=5))]
    service.start(order_created("o-2"))
    clock.advance(300)
    service.fire_due_timers()  # the order deadline: compensation, not the end yet
    assert len(ended) == 1
    service.advance(reply("InventoryReleased", "o-2"))
    assert ended[1] == (T0 + timedelta(seconds=5), T0 + timedelta(seconds=305))


class OutdatedCacheRepository(InMemorySagaRepository):
    """Serves a copy kept from earlier, as a worker's cache does after another worker moved the saga,
    unless asked for a fresh read."""

    def __init__(self) -> None:
        super().__init__()
        self.outdated: dict[str, object] = {}

    def get(self, order_id: str, *, fresh: bool = False):
        return self.sagas.get(order_id) if fresh else self.outdated.get(order_id, self.sagas.get(order_id))


@pytest.mark.parametrize("path", ["one by one", "batch"])
def test_a_redelivery_decided_on_an_outdated_copy_gives_a_finished_saga_no_deadline(
    settings: Settings, clock: FakeClock, path: str
) -> None:
    repo = OutdatedCacheRepository()
    service = bootstrap(settings, sagas=repo, clock=clock)
    reserved = reply("InventoryReserved", OID)
    service.start(order_created(OID))
    service.advance(reserved)
    awaiting_payment = repo.sagas[OID]  # with a payment deadline
    service.advance(reply("OrderCancelRequested", OID))
    service.advance(reply("InventoryReleased", OID))
    assert (repo.sagas[OID].state, repo.timers) == ("failed", {})
    repo.outdated[OID] = awaiting_payment  # what this worker's cache still holds

    if path == "batch":
        service.apply_many([reserved])
    else:
        service.advance(reserved)  # found handled on the outdated copy

    assert repo.timers == {}


def test_the_scrub_at_start_removes_card_numbers_of_earlier_versions_and_logs_how_many(
    service: SagaService, repo: InMemorySagaRepository, caplog: pytest.LogCaptureFixture
) -> None:
    repo.legacy_cards = {"o-old-1", "o-old-2"}
    with caplog.at_level("INFO", logger="services.orchestrator.service"):
        assert service.scrub_card_numbers() == 2
        assert service.scrub_card_numbers() == 0
    assert "scrubbed the card numbers of 2 saga(s) written by earlier versions" in caplog.text
