"""Counter increments and recent-feed entries gathered in memory and written once a second.

An increment of the shared totals document per event, and an insert into the recent feed per
event, were two thirds of the monitoring worker's database traffic. The worker adds up what its
events contribute and writes it in one increment and one bulk insert per flush. A crash can lose
at most the last flush interval of *figures and feed entries*; the timelines, which are the
record, are written per event.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from services.monitoring.domain import TimelineEvent
from services.monitoring.ports import RecentEventRepository, StatsRepository
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


class BufferedRecentEvents:
    """A RecentEventRepository whose additions wait in memory until ``flush()``; reads go straight through."""

    def __init__(self, inner: RecentEventRepository, max_pending: int = 50_000) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._pending: list[tuple[str, TimelineEvent]] = []
        # While the store is down the feed keeps only the newest entries: it is a view, not a record.
        self._max_pending = max_pending

    def add(self, order_id: str, event: TimelineEvent) -> None:
        self.add_many([(order_id, event)])

    def add_many(self, items: Sequence[tuple[str, TimelineEvent]]) -> None:
        with self._lock:
            self._pending.extend(items)
            del self._pending[: -self._max_pending]

    def flush(self) -> None:
        """Write what was gathered; on failure keep it for the next flush."""
        with self._lock:
            pending, self._pending = self._pending, []
        try:
            self._inner.add_many(pending)
        except Exception:
            with self._lock:
                self._pending[:0] = pending
                del self._pending[: -self._max_pending]
            raise

    def newest(self, limit: int, event_type: str | None = None) -> list[tuple[str, TimelineEvent]]:
        return self._inner.newest(limit, event_type)

    def trim(self, keep: int) -> int:
        return self._inner.trim(keep)
