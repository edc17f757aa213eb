"""Pacing of upkeep jobs whose cost grows with the data."""

from __future__ import annotations

import time
from collections.abc import Callable


def rest_after(took: float, share: float) -> float:
    """Seconds to rest after a run that took ``took`` so that runs take ``share`` of the time."""
    return took / share - took


class Paced:
    """A periodic job that takes at most ``share`` of the time: after a run that took t seconds,
    the calls within t / share - t seconds are skipped.

    For jobs that are pure upkeep and whose cost grows with the data (a scan of every open order
    in a backlog): they slow down with the backlog instead of taking the store with them.
    """

    def __init__(self, job: Callable[[], object], share: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._job = job
        self._share = share
        self._clock = clock
        self._next = float("-inf")
        self.__name__ = getattr(job, "__name__", "job")

    def __call__(self) -> bool:
        """Run the job unless it is resting; return whether it ran."""
        started = self._clock()
        if started < self._next:
            return False
        try:
            self._job()
        finally:
            took = self._clock() - started
            self._next = started + took + rest_after(took, self._share)
        return True
