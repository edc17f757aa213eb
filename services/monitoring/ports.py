"""What monitoring needs from the outside world, by role."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from services.monitoring.deadletters import DeadLetter
from services.monitoring.domain import OpenOrder, ServiceHealth, Timeline, TimelineEvent
from services.monitoring.stats import Totals


class TimelineRepository(Protocol):
    def append(self, order_id: str, customer_id: str | None, event: TimelineEvent) -> Timeline | None:
        """Add ``event`` to the order's timeline; return the timeline, or None if it was already there."""

    def append_many(self, entries: Sequence[tuple[str, str | None, TimelineEvent]]) -> list[bool]:
        """Add each (order id, customer id, event) as ``append`` does; return, per entry, whether it was new."""

    def get(self, order_id: str) -> Timeline | None:
        """Return the order's timeline, or None when no event of it was seen."""

    def track(self, opened: Mapping[str, datetime], closed: Iterable[str]) -> None:
        """Remember orders created and not ended (order id -> created at); forget those in ``closed``,
        which wins over ``opened``."""

    def open_before(self, moment: datetime, limit: int) -> list[OpenOrder]:
        """Return up to ``limit`` open orders created before ``moment``, oldest first."""

    def due_for_check(self, moment: datetime, now: datetime, limit: int) -> list[OpenOrder]:
        """Like ``open_before``, leaving out orders whose next check (``check_later``) is after ``now``."""

    def check_later(self, order_ids: Iterable[str], at: datetime) -> None:
        """Leave these open orders out of ``due_for_check`` until ``at``."""


class RecentEventRepository(Protocol):
    def add(self, order_id: str, event: TimelineEvent) -> None:
        """Remember the event in the recent feed (idempotent on event id)."""

    def add_many(self, items: Sequence[tuple[str, TimelineEvent]]) -> None:
        """Remember several (order id, event) pairs at once (idempotent on event id)."""

    def newest(self, limit: int, event_type: str | None = None) -> list[tuple[str, TimelineEvent]]:
        """Return (order id, event) pairs, newest first, optionally of one event type."""

    def trim(self, keep: int) -> int:
        """Delete all but the newest ``keep`` events; return how many were deleted."""


class StatsRepository(Protocol):
    def increment(self, counters: Mapping[str, float]) -> None:
        """Add to the totals counters named by dotted path."""

    def increment_minute(self, minute: str, counters: Mapping[str, int]) -> None:
        """Add to the counters of one minute bucket."""

    def set(self, values: Mapping[str, int]) -> None:
        """Overwrite totals fields named by dotted path."""

    def totals(self) -> Totals:
        """Return the current totals."""

    def minutes(self, since: str) -> dict[str, dict[str, int]]:
        """Return the minute buckets from ``since`` (inclusive) on, by minute key."""

    def trim_minutes(self, before: str) -> int:
        """Delete minute buckets older than ``before``; return how many."""


class DeadLetterRepository(Protocol):
    def add(self, letter: DeadLetter) -> bool:
        """Store a dead letter; return False when it was stored before."""

    def get(self, letter_id: str) -> DeadLetter | None:
        """Return one dead letter by id."""

    def newest(self, limit: int) -> list[DeadLetter]:
        """Return the latest dead letters, newest first."""

    def mark_replayed(self, letter_id: str, at: datetime) -> DeadLetter | None:
        """Count one replay of the dead letter; return it updated, or None when unknown."""


class HealthRepository(Protocol):
    def save(self, health: ServiceHealth) -> None:
        """Store the latest poll outcome of a service, replacing the previous one."""

    def all(self) -> list[ServiceHealth]:
        """Return the latest poll outcome of every polled service, by name."""


class HealthProbe(Protocol):
    def check(self, service: str, url: str) -> ServiceHealth:
        """Ask one service how it is; never raise, report failures as down."""


class RawPublisher(Protocol):
    def produce_sync(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Send one message as-is and wait for the broker's acknowledgement (PublishError if not)."""


# Consumer group -> total lag; None when it cannot be read right now.
LagProbe = Callable[[], Mapping[str, int] | None]
Clock = Callable[[], datetime]
Services = Sequence[tuple[str, str]]  # (service name, base URL)
