"""Counter increments gathered in memory and written once a second.

Each increment of the shared totals document is a locked update on FerretDB (three round trips);
per event that was a third of the whole system's database traffic. The worker adds up what its
events contribute and writes it in one increment per flush. A crash can lose at most the last
flush interval of *figures*; the timelines, which are the record, are written per event.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Mapping

from services.monitoring.ports import StatsRepository
from services.monitoring.stats import Totals


class BufferedStats:
    """A StatsRepository whose increments wait in memory until ``flush()``; reads go straight through."""

    def __init__(self, inner: StatsRepository) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._totals: Counter[str] = Counter()
        self._minutes: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def increment(self, counters: Mapping[str, float]) -> None:
        with self._lock:
            self._totals.update(counters)

    def increment_minute(self, minute: str, counters: Mapping[str, int]) -> None:
        with self._lock:
            self._minutes[minute].update(counters)

    def flush(self) -> None:
        """Write what was gathered; on failure keep it for the next flush."""
        with self._lock:
            totals, minutes = self._totals, self._minutes
            self._totals, self._minutes = Counter(), defaultdict(Counter)
        try:
            if totals:
                self._inner.increment(dict(totals))
                totals = Counter()
            while minutes:
                minute, counters = next(iter(minutes.items()))
                self._inner.increment_minute(minute, dict(counters))
                del minutes[minute]
        finally:
            with self._lock:
                self._totals.update(totals)
                for minute, counters in minutes.items():
                    self._minutes[minute].update(counters)

    def set(self, values: Mapping[str, int]) -> None:
        self._inner.set(values)

    def totals(self) -> Totals:
        return self._inner.totals()

    def minutes(self, since: str) -> dict[str, dict[str, int]]:
        return self._inner.minutes(since)

    def trim_minutes(self, before: str) -> int:
        return self._inner.trim_minutes(before)
