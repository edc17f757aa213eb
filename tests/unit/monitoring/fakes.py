"""In-memory fakes of monitoring's ports, plain Python, honest to the contract tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.monitoring.deadletters import DeadLetter
from services.monitoring.domain import OpenOrder, ServiceHealth, Timeline, TimelineEvent, make_timeline
from services.monitoring.stats import Totals
from shared.kafka_utils import PublishError


class InMemoryTimelineRepository:
    def __init__(self, limit: int = 500) -> None:
        self.limit = limit
        self.docs: dict[str, dict[str, Any]] = {}
        self.open_orders: dict[str, datetime] = {}
        self.check_at: dict[str, datetime] = {}

    def append(self, order_id: str, customer_id: str | None, event: TimelineEvent) -> Timeline | None:
        doc = self.docs.setdefault(order_id, {"customer_id": None, "events": []})
        if any(e.event_id == event.event_id for e in doc["events"]) or len(doc["events"]) >= self.limit:
            return None
        doc["events"].append(event)
        doc["customer_id"] = customer_id or doc["customer_id"]
        return self.get(order_id)

    def append_many(self, entries: Sequence[tuple[str, str | None, TimelineEvent]]) -> list[bool]:
        return [self.append(*entry) is not None for entry in entries]

    def get(self, order_id: str) -> Timeline | None:
        doc = self.docs.get(order_id)
        if doc is None:
            return None
        return make_timeline(order_id, doc["customer_id"], doc["events"])

    def track(self, opened: Mapping[str, datetime], closed: Iterable[str]) -> None:
        closed = set(closed)
        self.open_orders.update({k: v for k, v in opened.items() if k not in closed})
        for order_id in closed:
            self.open_orders.pop(order_id, None)
            self.check_at.pop(order_id, None)

    def open_before(self, moment: datetime, limit: int) -> list[OpenOrder]:
        found = sorted((at, oid) for oid, at in self.open_orders.items() if at < moment)
        return [OpenOrder(oid, at) for at, oid in found[:limit]]

    def due_for_check(self, moment: datetime, now: datetime, limit: int) -> list[OpenOrder]:
        due = [o for o in self.open_before(moment, len(self.open_orders)) if self.check_at.get(o.order_id, now) <= now]
        return due[:limit]

    def check_later(self, order_ids: Iterable[str], at: datetime) -> None:
        self.check_at.update({oid: at for oid in order_ids if oid in self.open_orders})


class InMemoryRecentEventRepository:
    def __init__(self) -> None:
        self.events: dict[str, tuple[str, TimelineEvent]] = {}

    def add(self, order_id: str, event: TimelineEvent) -> None:
        self.events[event.event_id] = (order_id, event)

    def add_many(self, items: Sequence[tuple[str, TimelineEvent]]) -> None:
        for order_id, event in items:
            self.add(order_id, event)

    def newest(self, limit: int, event_type: str | None = None) -> list[tuple[str, TimelineEvent]]:
        pairs = [p for p in self.events.values() if event_type is None or p[1].event_type == event_type]
        return sorted(pairs, key=lambda p: p[1].timestamp, reverse=True)[:limit]

    def trim(self, keep: int) -> int:
        doomed = [p[1].event_id for p in self.newest(len(self.events))[keep:]]
        for event_id in doomed:
            del self.events[event_id]
        return len(doomed)


class InMemoryStatsRepository:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = {}
        self.minute_docs: dict[str, dict[str, int]] = {}

    def increment(self, counters: Mapping[str, float]) -> None:
        for path, amount in counters.items():
            *parents, leaf = path.split(".")
            target = self.doc
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = target.get(leaf, 0) + amount

    def increment_minute(self, minute: str, counters: Mapping[str, int]) -> None:
        bucket = self.minute_docs.setdefault(minute, {})
        for name, amount in counters.items():
            bucket[name] = bucket.get(name, 0) + amount

    def set(self, values: Mapping[str, int]) -> None:
        for path, value in values.items():
            *parents, leaf = path.split(".")
            target = self.doc
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = value

    def totals(self) -> Totals:
        return Totals.from_counters(self.doc)

    def minutes(self, since: str) -> dict[str, dict[str, int]]:
        return {k: dict(v) for k, v in self.minute_docs.items() if k >= since}

    def trim_minutes(self, before: str) -> int:
        doomed = [k for k in self.minute_docs if k < before]
        for key in doomed:
            del self.minute_docs[key]
        return len(doomed)


class InMemoryDeadLetterRepository:
    def __init__(self) -> None:
        self.letters: dict[str, DeadLetter] = {}

    def add(self, letter: DeadLetter) -> bool:
        if letter.id in self.letters:
            return False
        self.letters[letter.id] = letter
        return True

    def get(self, letter_id: str) -> DeadLetter | None:
        return self.letters.get(letter_id)

    def newest(self, limit: int) -> list[DeadLetter]:
        return sorted(self.letters.values(), key=lambda x: x.received_at, reverse=True)[:limit]

    def mark_replayed(self, letter_id: str, at: datetime) -> DeadLetter | None:
        letter = self.letters.get(letter_id)
        if letter is None:
            return None
        self.letters[letter_id] = replace(letter, replayed_count=letter.replayed_count + 1, last_replayed_at=at)
        return self.letters[letter_id]


class InMemoryHealthRepository:
    def __init__(self) -> None:
        self.health: dict[str, ServiceHealth] = {}

    def save(self, health: ServiceHealth) -> None:
        self.health[health.service] = health

    def all(self) -> list[ServiceHealth]:
        return [self.health[name] for name in sorted(self.health)]


class FakeHealthProbe:
    """Answers with the status set per service (default up) and counts the checks."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.statuses: dict[str, str] = {}
        self.checks = 0

    def check(self, service: str, url: str) -> ServiceHealth:
        self.checks += 1
        status = self.statuses.get(service, "up")
        error = None if status == "up" else f"{service} said {status}"
        code = {"up": 200, "degraded": 503}.get(status)
        return ServiceHealth(service, status, self.clock(), http_status=code, latency_ms=1.0, error=error)


class FakeRawPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.down = False

    def produce_sync(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if self.down:
            raise PublishError(f"no acknowledgement from Kafka for {topic}")
        self.sent.append((topic, key, value, list(headers or [])))


class FakeClock:
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
