"""Paced upkeep jobs rest in proportion to how long their last run took."""

from __future__ import annotations

import pytest

from shared.pacing import Paced


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_job_that_took_long_rests_until_it_has_used_only_its_share():
    clock = Clock()
    runs: list[float] = []

    def scan() -> None:
        runs.append(clock.now)
        clock.now += 2.0  # this run took two seconds

    paced = Paced(scan, share=0.1, clock=clock)
    assert paced() is True
    clock.now += 17.9  # 19.9 s after the start of the run: still resting
    assert paced() is False
    clock.now += 0.1  # 20 s after: two seconds are a tenth of that
    assert paced() is True
    assert runs == [1000.0, 1020.0]


def test_a_quick_job_runs_every_time():
    clock = Clock()
    paced = Paced(lambda: None, share=0.05, clock=clock)
    assert [paced() for _ in range(3)] == [True, True, True]


def test_a_failing_job_rests_too_and_its_error_reaches_the_caller():
    clock = Clock()

    def failing() -> None:
        clock.now += 1.0
        raise RuntimeError("store unavailable")

    paced = Paced(failing, share=0.5, clock=clock)
    with pytest.raises(RuntimeError):
        paced()
    assert paced() is False
    clock.now += 1.0
    with pytest.raises(RuntimeError):
        paced()
