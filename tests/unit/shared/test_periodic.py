"""Periodic jobs keep their interval until a run takes long, then back off in proportion."""

from __future__ import annotations

import threading

import pytest

from shared import runtime
from shared.runtime import next_wait


def test_a_quick_job_runs_at_its_interval():
    assert next_wait(1.0, 0.01) == 1.0


def test_a_slow_job_waits_in_proportion_to_its_run_time_so_it_takes_a_bounded_share():
    took = 0.5
    wait = next_wait(1.0, took)
    assert wait == pytest.approx(4.5)
    assert took / (took + wait) == pytest.approx(0.1)


def test_the_loop_runs_the_job_again_after_a_failure_and_stops_when_asked(monkeypatch: pytest.MonkeyPatch):
    stop = threading.Event()
    runs: list[int] = []

    def job() -> None:
        runs.append(1)
        if len(runs) == 3:
            stop.set()
        raise RuntimeError("store unavailable")

    monkeypatch.setattr(runtime, "PERIODIC_WAIT_PER_RUN_TIME", 0.0)
    thread = threading.Thread(target=runtime._every, args=(0.001, job, stop))
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(runs) == 3
