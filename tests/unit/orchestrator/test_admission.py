"""New orders are admitted while fewer sagas than the limit are in flight."""

from __future__ import annotations

from collections.abc import Callable

from services.orchestrator.admission import SagaAdmission


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
