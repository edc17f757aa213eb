"""New orders are admitted while fewer sagas than the limit are in flight."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from services.orchestrator.admission import SagaAdmission, SagaWindow


class InFlight:
    def __init__(self, count: int) -> None:
        self.count = count
        self.while_counting: Callable[[], None] = lambda: None

    def __call__(self) -> int:
        self.while_counting()
        return self.count


def test_the_gate_is_open_below_the_limit_and_closed_at_it():
    in_flight = InFlight(199)
    admission = SagaAdmission(in_flight, limit=200)
    assert admission.refresh() == 199
    assert admission.is_open()
    in_flight.count = 200
    admission.refresh()
    assert not admission.is_open()


def test_sagas_started_since_the_last_count_close_the_gate_before_the_next_count():
    admission = SagaAdmission(InFlight(8), limit=10)
    admission.refresh()
    admission.admitted(1)
    assert admission.is_open()
    admission.admitted(1)
    assert not admission.is_open()


def test_a_new_count_replaces_the_local_tally_as_sagas_end():
    in_flight = InFlight(2)
    admission = SagaAdmission(in_flight, limit=10)
    admission.refresh()
    admission.admitted(7)
    in_flight.count = 9  # the seven are in this count (their timers were written)
    admission.refresh()
    assert admission.is_open()  # 9, not 9 + 7


def test_sagas_started_while_counting_stay_in_the_tally():
    in_flight = InFlight(5)
    admission = SagaAdmission(in_flight, limit=10)
    admission.refresh()
    admission.admitted(2)
    in_flight.while_counting = lambda: admission.admitted(3)  # not in this count
    admission.refresh()
    assert admission.is_open()  # 5 + 3 = 8
    admission.admitted(2)
    assert not admission.is_open()  # 10


def test_a_closed_gate_reopens_only_a_tenth_below_the_limit():
    in_flight = InFlight(100)
    admission = SagaAdmission(in_flight, limit=100)
    admission.refresh()
    assert not admission.is_open()
    in_flight.count = 95
    admission.refresh()
    assert not admission.is_open()
    in_flight.count = 89
    admission.refresh()
    assert admission.is_open()
    in_flight.count = 95
    admission.refresh()
    assert admission.is_open()  # open stays open up to the limit


def test_the_counting_loop_keeps_going_when_a_count_fails_and_stops_when_asked():
    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("store unavailable")
        admission.stop()
        return 0

    admission = SagaAdmission(flaky, limit=10, interval_s=0.001)
    admission.run()
    assert len(calls) == 2


# --- the latency window ---------------------------------------------------------------------

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def end_sagas(window: SagaWindow, count: int, *, started: float, took: float) -> None:
    for _ in range(count):
        window.ended(at(started), at(started + took))


def test_a_window_starts_small_and_widens_by_one_for_each_saga_that_ends_in_time():
    window = SagaWindow(ceiling=1000, target_s=60, since=START)
    assert window.size == 100
    end_sagas(window, 100, started=1, took=59)
    assert window.size == 200  # doubled in one round: slow start


def test_a_window_never_outgrows_its_ceiling_nor_starts_above_it():
    assert SagaWindow(ceiling=30, target_s=60, since=START).size == 30
    window = SagaWindow(ceiling=150, target_s=60, since=START)
    end_sagas(window, 500, started=1, took=1)
    assert window.size == 150


def test_a_slow_saga_halves_the_window_once_per_round():
    window = SagaWindow(ceiling=1000, target_s=60, since=START)
    end_sagas(window, 300, started=1, took=1)
    assert window.size == 400
    window.ended(at(10), at(100))  # 90 s: too slow
    assert window.size == 200
    end_sagas(window, 5, started=20, took=90)  # started before that cut: let in by the old window
    assert window.size == 200
    window.ended(at(101), at(200))  # started after the cut, and slow still
    assert window.size == 100


def test_after_a_cut_the_window_grows_by_a_tenth_per_saga_in_time():
    window = SagaWindow(ceiling=1000, target_s=60, since=START)
    window.ended(at(1), at(100))
    assert window.size == 50
    end_sagas(window, 100, started=200, took=10)
    assert window.size == 60


def test_a_window_does_not_shrink_below_the_floor():
    window = SagaWindow(ceiling=1000, target_s=60, since=START)
    for cut in range(10):
        window.ended(at(1000 * cut + 1), at(1000 * cut + 500))
    assert window.size == 20


def test_sagas_started_before_the_process_do_not_cut_the_window():
    window = SagaWindow(ceiling=1000, target_s=60, since=at(3600))
    end_sagas(window, 50, started=0, took=3700)  # in flight across a restart
    assert window.size == 100


def test_a_window_needs_a_ceiling_and_a_positive_target():
    with pytest.raises(ValueError):
        SagaWindow(ceiling=0, target_s=60, since=START)
    with pytest.raises(ValueError):
        SagaWindow(ceiling=10, target_s=0, since=START)


def test_the_gate_follows_the_window():
    in_flight = InFlight(99)
    admission = SagaAdmission(in_flight, limit=1000, window=SagaWindow(1000, 60, since=START))
    admission.refresh()
    assert admission.limit == 100
    assert admission.is_open()
    admission.admitted(1)
    assert not admission.is_open()  # 100 in flight: the window, not the ceiling of 1,000
    for _ in range(20):
        admission.ended(at(1), at(2))
    assert admission.limit == 120
    assert admission.is_open()


def test_without_a_window_ended_sagas_change_nothing():
    admission = SagaAdmission(InFlight(0), limit=10)
    admission.ended(at(1), at(1000))
    assert admission.limit == 10
