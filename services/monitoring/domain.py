"""What monitoring knows: order timelines, dead letters, service health and the rules that derive them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.events import FAILURE_REASONS, Envelope

# The events that end an order's flow, and the status each one means.
TERMINAL_EVENTS = {"OrderCompleted": "completed", "OrderFailed": "failed"}
MAX_ORDER_ID_LENGTH = 200
MAX_DETAIL_LENGTH = 300


class MonitoringError(Exception):
    """Base of the errors a monitoring request can run into."""


class InvalidOrderId(MonitoringError):
    """An event names an order id monitoring cannot store."""


class UnknownOrder(MonitoringError):
    """No event of this order has been seen."""


class UnknownDeadLetter(MonitoringError):
    """No dead letter has this id."""


class NotReplayable(MonitoringError):
    """The dead letter does not name a topic it may be replayed to."""


@dataclass(frozen=True)
class TimelineEvent:
    """One event of an order as monitoring saw it."""

    event_id: str
    topic: str
    event_type: str
    timestamp: datetime
    source: str
    received_at: datetime
    detail: str | None = None


@dataclass(frozen=True)
class Timeline:
    """Every event seen for one order, in time order, with what they imply."""

    order_id: str
    customer_id: str | None
    events: tuple[TimelineEvent, ...]
    created_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def first_at(self) -> datetime | None:
        return self.events[0].timestamp if self.events else None

    @property
    def last_at(self) -> datetime | None:
        return self.events[-1].timestamp if self.events else None

    @property
    def last_event(self) -> TimelineEvent | None:
        return self.events[-1] if self.events else None

    @property
    def terminal_event(self) -> TimelineEvent | None:
        """Return the latest OrderCompleted/OrderFailed, if the flow has ended."""
        ends = [e for e in self.events if e.event_type in TERMINAL_EVENTS]
        return ends[-1] if ends else None

    @property
    def status(self) -> str:
        end = self.terminal_event
        return TERMINAL_EVENTS[end.event_type] if end else "in_progress"

    @property
    def failure_reason(self) -> str | None:
        end = self.terminal_event
        return end.detail if end and end.event_type == "OrderFailed" else None

    def elapsed_s(self) -> float | None:
        """Seconds from creation (or the first event) to the end (or the latest event)."""
        start, end = self.created_at or self.first_at, self.ended_at or self.last_at
        if start is None or end is None:
            return None
        return round(max(0.0, (end - start).total_seconds()), 3)


def make_timeline(
    order_id: str,
    customer_id: str | None,
    events: Iterable[TimelineEvent],
) -> Timeline:
    """Build a timeline with its events sorted by time and its start and end derived from them."""
    ordered = tuple(sorted(events, key=lambda e: (e.timestamp, e.received_at, e.event_id)))
    created = [e.timestamp for e in ordered if e.event_type == "OrderCreated"]
    ended = [e.timestamp for e in ordered if e.event_type in TERMINAL_EVENTS]
    return Timeline(
        order_id,
        customer_id,
        ordered,
        created_at=created[0] if created else None,
        ended_at=ended[-1] if ended else None,
    )


def completed_duration(timeline: Timeline, event: TimelineEvent) -> float | None:
    """The order's duration when ``event``, just added to ``timeline``, completed it; else None.

    The pair is completed by whichever of the first OrderCreated and the first final event was
    added second. Each addition returns the timeline as it left it (one atomic write), so exactly
    one addition sees both ends with itself as the only one of its kind: the duration is counted
    once, even with several consumers, without a separate claim.
    """
    if timeline.created_at is None or timeline.ended_at is None:
        return None
    if event.event_type == "OrderCreated":
        alone = sum(e.event_type == "OrderCreated" for e in timeline.events) == 1
    elif event.event_type in TERMINAL_EVENTS:
        alone = sum(e.event_type in TERMINAL_EVENTS for e in timeline.events) == 1
    else:
        return None
    return timeline.elapsed_s() if alone else None


@dataclass(frozen=True)
class OpenOrder:
    """An order that was created and has not ended yet."""

    order_id: str
    created_at: datetime


def parse_time(text: str) -> datetime | None:
    """Parse an ISO-8601 timestamp as UTC (naive means UTC); None when it is not one."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """Format a datetime as ISO-8601 UTC with milliseconds and a Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_detail(event: Envelope) -> str | None:
    """Return the short reason an event carries, if any (e.g. why an order or payment failed)."""
    if event.event_type == "OrderFailed":
        value = event.data.get("reason")
    else:
        value = event.data.get("reason") or event.data.get("detail")
    return str(value)[:MAX_DETAIL_LENGTH] if value not in (None, "") else None


def timeline_event(event: Envelope, received_at: datetime) -> TimelineEvent:
    """Record an envelope; a timestamp that does not parse falls back to the time it arrived."""
    return TimelineEvent(
        event_id=event.event_id,
        topic=event.topic,
        event_type=event.event_type,
        timestamp=parse_time(event.occurred_at) or received_at,
        source=event.source,
        received_at=received_at,
        detail=event_detail(event),
    )


def failure_reason_key(reason: object) -> str:
    """Map a failure reason to a bounded set of names safe for Mongo keys and metric labels."""
    return reason if isinstance(reason, str) and reason in FAILURE_REASONS else "other"


@dataclass(frozen=True)
class ServiceHealth:
    """The outcome of the latest health poll of one service."""

    service: str
    status: str  # up | down | degraded
    checked_at: datetime
    http_status: int | None = None
    latency_ms: float | None = None
    dependencies: dict[str, object] = field(default_factory=dict)
    error: str | None = None
    consecutive_failures: int = 0
    down_since: datetime | None = None


def follow_health(previous: ServiceHealth | None, current: ServiceHealth) -> ServiceHealth:
    """Carry the failure streak over from the previous poll: reset when up, else count on."""
    if current.status == "up":
        return current
    failures = (previous.consecutive_failures if previous else 0) + 1
    since = previous.down_since if previous and previous.down_since else current.checked_at
    return ServiceHealth(**{**current.__dict__, "consecutive_failures": failures, "down_since": since})


def overall_status(health: Iterable[ServiceHealth]) -> str:
    """Healthy when every service is up, down when none is, degraded in between."""
    statuses = [h.status for h in health]
    if statuses and all(s == "up" for s in statuses):
        return "healthy"
    if not statuses or all(s == "down" for s in statuses):
        return "down"
    return "degraded"
