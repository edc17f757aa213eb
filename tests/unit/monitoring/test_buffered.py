"""Buffered figures: nothing is written until a flush, nothing is lost when a flush fails."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from services.monitoring.buffered import BufferedRecentEvents, BufferedStats
from tests.unit.monitoring.contract import item
from tests.unit.monitoring.fakes import InMemoryRecentEventRepository, InMemoryStatsRepository


class FailingOnce(InMemoryStatsRepository):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def increment(self, counters: Mapping[str, float]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down")
        super().increment(counters)


def test_increments_add_up_in_memory_and_are_written_once_per_flush():
    inner = InMemoryStatsRepository()
    figures = BufferedStats(inner)
    for _ in range(3):
        figures.increment({"orders_created": 1, "events_total.OrderCreated": 1})
    figures.increment_minute("2026-11-21T10:00", {"created": 2})
    assert inner.totals().orders_created == 0
    figures.flush()
    assert inner.totals().orders_created == 3
    assert inner.minutes("2026-11-21T10:00") == {"2026-11-21T10:00": {"created": 2}}
    figures.flush()
    assert inner.totals().orders_created == 3


def test_a_failed_flush_keeps_the_figures_for_the_next_one():
    inner = FailingOnce()
    figures = BufferedStats(inner)
    figures.increment({"orders_created": 2})
    with pytest.raises(ConnectionError):
        figures.flush()
    figures.increment({"orders_created": 1})
    figures.flush()
    assert inner.totals().orders_created == 3


def test_reads_go_straight_to_the_store():
    inner = InMemoryStatsRepository()
    inner.increment({"orders_created": 5})
    assert BufferedStats(inner).totals().orders_created == 5


class FeedDownOnce(InMemoryRecentEventRepository):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def add_many(self, items) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down")
        super().add_many(items)


def test_feed_entries_wait_for_the_flush_and_survive_a_failed_one():
    inner = FeedDownOnce()
    feed = BufferedRecentEvents(inner)
    feed.add("o1", item("e1", seconds=0))
    assert inner.newest(10) == []
    with pytest.raises(ConnectionError):
        feed.flush()
    feed.add("o2", item("e2", seconds=1))
    feed.flush()
    assert [e.event_id for _oid, e in feed.newest(10)] == ["e2", "e1"]
    feed.flush()
    assert len(inner.events) == 2


def test_a_long_outage_keeps_only_the_newest_feed_entries():
    inner = FeedDownOnce()
    inner.failures = 0
    feed = BufferedRecentEvents(inner, max_pending=3)
    for n in range(5):
        feed.add("o", item(f"e{n}", seconds=n))
    feed.flush()
    assert sorted(inner.events) == ["e2", "e3", "e4"]
