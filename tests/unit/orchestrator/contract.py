"""The behaviour every SagaRepository must have; subclasses provide ``make_repo()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from services.orchestrator import saga, transitions
from services.orchestrator.ports import SagaRepository, SagaWrite, Timer
from services.orchestrator.saga import Context, SagaState, Timeouts
from tests.unit.orchestrator.fakes import T0, order_created, reply

TIMEOUTS = Timeouts(payment=timedelta(seconds=60), order=timedelta(seconds=300))


def new_saga(order_id: str, at_s: float = 0) -> tuple[SagaState, list]:
    """Return a freshly started saga and its events, created ``at_s`` seconds after T0."""
    started = saga.start(order_created(order_id), Context(T0 + timedelta(seconds=at_s), TIMEOUTS))
    return started.saga, list(started.events)


class SagaRepositoryContract:
    """Subclasses define ``make_repo()`` returning an empty repository."""

    make_repo: Callable[..., SagaRepository]

    @pytest.fixture
    def repo(self) -> SagaRepository:
        return self.make_repo()

    def test_a_created_saga_reads_back_equal_at_version_one(self, repo: SagaRepository) -> None:
        created, events = new_saga("o-1")

        assert repo.create(created, events) is True

        assert repo.get("o-1") == replace(created, version=1)

    def test_an_unknown_saga_is_none(self, repo: SagaRepository) -> None:
        assert repo.get("nope") is None

    def test_creating_an_existing_saga_returns_false_and_keeps_the_first(self, repo: SagaRepository) -> None:
        first, events = new_saga("o-1")
        repo.create(first, events)
        second, _ = new_saga("o-1", at_s=5)

        assert repo.create(second, []) is False
        assert repo.get("o-1").created_at == first.created_at

    def test_an_update_at_the_current_version_is_stored_and_increments_the_version(self, repo: SagaRepository) -> None:
        created, events = new_saga("o-1")
        repo.create(created, events)
        current = repo.get("o-1")
        moved = transitions.apply(current, reply("InventoryReserved", "o-1"), Context(T0, TIMEOUTS))

        assert repo.update(moved.saga, moved.events) is True

        assert repo.get("o-1") == replace(moved.saga, version=2)

    def test_an_update_from_a_stale_version_is_refused_and_changes_nothing(self, repo: SagaRepository) -> None:
        created, events = new_saga("o-1")
        repo.create(created, events)
        stale = repo.get("o-1")
        first = transitions.apply(stale, reply("InventoryReserved", "o-1"), Context(T0, TIMEOUTS))
        repo.update(first.saga, first.events)
        late = transitions.apply(stale, reply("OrderCancelRequested", "o-1"), Context(T0, TIMEOUTS))

        assert repo.update(late.saga, late.events) is False

        assert repo.get("o-1").state == "awaiting_payment"

    def test_an_update_of_a_missing_saga_is_refused(self, repo: SagaRepository) -> None:
        ghost, _ = new_saga("ghost")

        assert repo.update(ghost, []) is False

    def test_recent_lists_newest_first_filtered_by_state_and_limited(self, repo: SagaRepository) -> None:
        for n in range(3):
            created, events = new_saga(f"o-{n}", at_s=n)
            repo.create(created, events)
        bad = saga.start(order_created("o-bad", items=[]), Context(T0 + timedelta(seconds=10), TIMEOUTS))
        repo.create(bad.saga, bad.events)

        assert [s.order_id for s in repo.recent(None, 10)] == ["o-bad", "o-2", "o-1", "o-0"]
        assert [s.order_id for s in repo.recent("reserving", 2)] == ["o-2", "o-1"]
        assert [s.order_id for s in repo.recent("failed", 10)] == ["o-bad"]

    def test_due_timers_are_those_at_or_before_now_earliest_first(self, repo: SagaRepository) -> None:
        repo.set_timer(Timer("late", T0 + timedelta(seconds=30), "order"))
        repo.set_timer(Timer("early", T0 + timedelta(seconds=10), "payment"))
        repo.set_timer(Timer("future", T0 + timedelta(seconds=99), "order"))

        due = repo.due_timers(T0 + timedelta(seconds=30), 10)

        assert due == [
            Timer("early", T0 + timedelta(seconds=10), "payment"),
            Timer("late", T0 + timedelta(seconds=30), "order"),
        ]
        assert len(repo.due_timers(T0 + timedelta(seconds=30), 1)) == 1

    def test_setting_a_timer_again_moves_it_and_clearing_removes_it(self, repo: SagaRepository) -> None:
        repo.set_timer(Timer("o-1", T0, "order"))
        repo.set_timer(Timer("o-1", T0 + timedelta(seconds=50), "payment"))

        assert repo.due_timers(T0 + timedelta(seconds=49), 10) == []
        assert repo.due_timers(T0 + timedelta(seconds=50), 10) == [Timer("o-1", T0 + timedelta(seconds=50), "payment")]
        repo.clear_timer("o-1")
        repo.clear_timer("o-1")
        assert repo.due_timers(T0 + timedelta(days=1), 10) == []

    def test_timed_count_counts_each_saga_with_a_timer_once(self, repo: SagaRepository) -> None:
        assert repo.timed_count() == 0
        repo.set_timer(Timer("o-1", T0, "order"))
        repo.set_timer(Timer("o-1", T0 + timedelta(seconds=5), "payment"))
        repo.set_timer(Timer("o-2", T0, "order"))
        assert repo.timed_count() == 2
        repo.clear_timer("o-1")
        assert repo.timed_count() == 1

    def test_untimed_active_finds_active_sagas_without_a_timer(self, repo: SagaRepository) -> None:
        for order_id in ("timed", "untimed"):
            created, events = new_saga(order_id)
            repo.create(created, events)
        bad = saga.start(order_created("failed", items=[]), Context(T0, TIMEOUTS))
        repo.create(bad.saga, bad.events)
        repo.set_timer(Timer("timed", T0, "order"))

        found = repo.untimed_active(saga.ACTIVE_STATES)

        assert [s.order_id for s in found] == ["untimed"]

    def test_write_many_creates_and_updates_each_saga_at_the_next_version(self, repo: SagaRepository) -> None:
        existing, events = new_saga("o-old")
        repo.create(existing, events)
        moved = transitions.apply(repo.get("o-old"), reply("InventoryReserved", "o-old"), Context(T0, TIMEOUTS))
        fresh, fresh_events = new_saga("o-new")

        landed = repo.write_many(
            [SagaWrite(moved.saga, moved.events, new=False), SagaWrite(fresh, tuple(fresh_events), new=True)]
        )

        assert landed == [True, True]
        assert repo.get("o-old") == replace(moved.saga, version=2)
        assert repo.get("o-new") == replace(fresh, version=1)

    def test_write_many_refuses_an_existing_new_saga_and_a_stale_update_and_writes_the_rest(
        self, repo: SagaRepository
    ) -> None:
        for order_id in ("o-dup", "o-stale", "o-ok"):
            created, events = new_saga(order_id)
            repo.create(created, events)
        stale = repo.get("o-stale")
        first = transitions.apply(stale, reply("InventoryReserved", "o-stale"), Context(T0, TIMEOUTS))
        repo.update(first.saga, first.events)
        late = transitions.apply(stale, reply("OrderCancelRequested", "o-stale"), Context(T0, TIMEOUTS))
        again, again_events = new_saga("o-dup", at_s=5)
        ok = transitions.apply(repo.get("o-ok"), reply("InventoryReserved", "o-ok"), Context(T0, TIMEOUTS))

        landed = repo.write_many(
            [
                SagaWrite(again, tuple(again_events), new=True),
                SagaWrite(late.saga, late.events, new=False),
                SagaWrite(ok.saga, ok.events, new=False),
            ]
        )

        assert landed == [False, False, True]
        assert repo.get("o-dup").created_at == T0
        assert repo.get("o-stale") == replace(first.saga, version=2)
        assert repo.get("o-ok") == replace(ok.saga, version=2)

    def test_write_many_of_nothing_writes_nothing(self, repo: SagaRepository) -> None:
        assert repo.write_many([]) == []
