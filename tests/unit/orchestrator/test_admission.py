"""New orders are admitted while fewer sagas than the limit are in flight."""

from __future__ import annotations

from services.orchestrator.admission import SagaAdmission


class InFlight:
    def __init__(self, count: int) -> None:
        self.count = count

    def __call__(self) -> int:
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
    in_flight = InFlight(10)
    admission = SagaAdmission(in_flight, limit=10)
    admission.refresh()
    admission.admitted(5)
    in_flight.count = 4  # those five and others ended meanwhile
    admission.refresh()
    assert admission.is_open()
