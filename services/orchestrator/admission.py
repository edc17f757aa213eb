"""Admission of new orders: start sagas only while few enough are in flight.

Why: every saga in flight holds stock, and a hold is an entry in its product's document, which
every reservation, commit and release of that product rewrites whole. When orders arrive far
faster than payments complete, the inventory commands queue up behind thousands of reservations,
the product documents grow with every one, each write of them gets slower and throughput falls
as the backlog grows (measured: 3.6 ms per stock write with no holds, 15 ms with 400, 75 ms with
1,600 on FerretDB). Keeping new orders in Kafka while ``limit`` sagas are in flight keeps the work
in progress, and so the cost of each write, bounded; a burst is then worked off at full speed.

A fixed limit is not enough: how many sagas may be in flight depends on how fast they end, and
that depends on the hardware and on what else the box is doing. While 100,000 orders were being
posted flat out, sagas ended at ~1.2/s, so 1,000 of them in flight took ~800 s each and ran into
the 300 s order deadline. ``SagaWindow`` therefore sizes the limit the way TCP sizes its
congestion window, with saga latency as the signal: it grows while sagas end within a target
time and halves when one does not. The configured limit stays the ceiling.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from prometheus_client import Gauge

logger = logging.getLogger(__name__)

SAGAS_IN_FLIGHT = Gauge("sagas_in_flight", "Sagas started and not yet ended (those with a timer)")
ADMISSION_OPEN = Gauge("saga_admission_open", "1 while new orders are taken in, 0 while they wait in Kafka")
ADMISSION_LIMIT = Gauge("saga_admission_limit", "Sagas let in flight now (the latency window, at most the ceiling)")

# A fresh window starts here and doubles every round of sagas that end in time (slow start).
INITIAL_WINDOW = 100
# The window never shrinks below this (or the ceiling, if that is lower).
FLOOR = 20
# Above the last cut's size the window grows by one for every ten sagas that end in time.
GROWTH_AFTER_CUT = 0.1


class SagaWindow:
    """How many sagas may be in flight: TCP's congestion window, with saga latency as the signal.

    Every saga that ends within ``target_s`` of its start widens the window: by one while below
    the size of the last cut (so it doubles each round, like TCP's slow start), by a tenth above
    it. A saga that takes longer halves it, once per round: sagas started before the last cut were
    let in by the old, wider window, and their slowness is already answered. Sagas started before
    ``since`` (the process start) do not cut it either: a restart, not the load, made them slow.
    """

    def __init__(self, ceiling: int, target_s: float, since: datetime, initial: int = INITIAL_WINDOW) -> None:
        if ceiling < 1 or target_s <= 0:
            raise ValueError("a saga window needs a ceiling of at least 1 and a positive target")
        self._ceiling = ceiling
        self._floor = min(ceiling, FLOOR)
        self._target_s = target_s
        self._size = float(min(ceiling, max(self._floor, initial)))
        self._slow_start_below = float(ceiling)
        self._cut_at = since

    @property
    def size(self) -> int:
        return int(self._size)

    def ended(self, started_at: datetime, ended_at: datetime) -> None:
        """Take note of a saga that ended."""
        if (ended_at - started_at).total_seconds() <= self._target_s:
            step = 1.0 if self._size < self._slow_start_below else GROWTH_AFTER_CUT
            self._size = min(float(self._ceiling), self._size + step)
        elif started_at > self._cut_at:
            self._size = self._slow_start_below = max(float(self._floor), self._size / 2)
            self._cut_at = ended_at
            logger.info("sagas take longer than %.0fs: %d let in flight from now on", self._target_s, self.size)


class SagaAdmission:
    """A consumer gate (see shared.kafka_utils.Gate) for OrderCreated, with its own counting loop.

    ``refresh`` counts the sagas in flight (every replica's); in between, each saga this process
    starts is added to that count, so the gate closes on time between two counts. Once closed it
    reopens only when the count is a tenth below the limit: each pause drops what the consumer
    had fetched of the topic, so a gate flapping at the limit would fetch it again and again.
    With a ``window`` the limit is the window's size, and ``ended`` feeds it the sagas that end.
    """

    event_types = frozenset({"OrderCreated"})

    def __init__(
        self,
        count_in_flight: Callable[[], int],
        limit: int,
        interval_s: float = 0.5,
        window: SagaWindow | None = None,
    ) -> None:
        self._count_in_flight = count_in_flight
        self._fixed_limit = limit
        self._window = window
        self._interval = interval_s
        self._lock = threading.Lock()
        self._in_flight = 0
        self._started_since_count = 0
        self._open = True
        self._stop = threading.Event()

    def refresh(self) -> int:
        """Count the sagas in flight now; return the count."""
        with self._lock:
            started_before = self._started_since_count
        counted = self._count_in_flight()
        with self._lock:
            self._in_flight = counted
            # Sagas started while counting may or may not be in the count: keep them in the
            # tally (counting one twice closes the gate a little early, never late).
            self._started_since_count -= started_before
        SAGAS_IN_FLIGHT.set(counted)
        ADMISSION_OPEN.set(int(self.is_open()))
        ADMISSION_LIMIT.set(self.limit)
        return counted

    @property
    def limit(self) -> int:
        return self._window.size if self._window else self._fixed_limit

    def is_open(self) -> bool:
        with self._lock:
            limit = self.limit
            load = self._in_flight + self._started_since_count
            if self._open and load >= limit:
                self._open = False
            elif not self._open and load < limit - max(1, limit // 10):
                self._open = True
            return self._open

    def ended(self, started_at: datetime, ended_at: datetime) -> None:
        """A saga this process drove ended (completed or failed)."""
        if self._window is None:
            return
        with self._lock:
            self._window.ended(started_at, ended_at)
        ADMISSION_LIMIT.set(self.limit)

    def admitted(self, count: int) -> None:
        with self._lock:
            self._started_since_count += count

    def run(self) -> None:
        """Count every ``interval_s`` until stopped (a worker's background task)."""
        while not self._stop.wait(self._interval):
            try:
                self.refresh()
            except Exception as err:
                # The last count stands meanwhile; sagas started since keep adding to it.
                logger.warning("could not count the sagas in flight: %s", err)

    def stop(self) -> None:
        self._stop.set()
