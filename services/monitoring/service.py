"""MonitoringService: record what flows through Kafka and answer questions about it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.monitoring import alerts as rules
from services.monitoring import stats
from services.monitoring.deadletters import DeadLetter, RawMessage, dead_letter
from services.monitoring.domain import (
    MAX_ORDER_ID_LENGTH,
    TERMINAL_EVENTS,
    InvalidOrderId,
    NotReplayable,
    ServiceHealth,
    Timeline,
    TimelineEvent,
    UnknownDeadLetter,
    UnknownOrder,
    completed_duration,
    follow_health,
    iso,
    overall_status,
    timeline_event,
)
from services.monitoring.ports import (
    Clock,
    DeadLetterRepository,
    HealthProbe,
    HealthRepository,
    LagProbe,
    RawPublisher,
    RecentEventRepository,
    Services,
    StatsRepository,
    TimelineRepository,
)
from shared.config import MonitoringSettings
from shared.events import TOPIC_BY_EVENT, Envelope, utc_now

logger = logging.getLogger(__name__)

# The stuck-orders report looks at this many open orders at most.
OPEN_ORDERS_SCANNED = 1000
# Housekeeping reads an open order that is still running again only after this long
# (monitoring.open_orders_checked of them per pass).
OPEN_ORDER_RECHECK = timedelta(minutes=5)
OPEN_ORDER_RETENTION = timedelta(days=1)
REPLAY_TIMEOUT_S = 10.0
STATUS_EVENT = {"completed": "OrderCompleted", "failed": "OrderFailed"}
ENDS = frozenset({"OrderCreated", *TERMINAL_EVENTS})


@dataclass(frozen=True)
class MetricsSnapshot:
    """Everything the Prometheus exposition is built from."""

    totals: stats.Totals
    health: list[ServiceHealth]
    lag: dict[str, int] | None


class MonitoringService:
    """Timelines, figures, dead letters and service health of the whole system."""

    def __init__(
        self,
        *,
        timelines: TimelineRepository,
        recent: RecentEventRepository,
        figures: StatsRepository,
        letters: DeadLetterRepository,
        health: HealthRepository,
        probe: HealthProbe,
        publisher: RawPublisher,
        services: Services,
        settings: MonitoringSettings,
        topic_prefix: str = "",
        lag: LagProbe | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._timelines = timelines
        self._recent = recent
        self._stats = figures
        self._letters = letters
        self._health = health
        self._probe = probe
        self._publisher = publisher
        self._services = list(services)
        self._settings = settings
        # Only the event topics: replaying onto the dead-letter topic itself would loop.
        self._replayable = frozenset(topic_prefix + topic for topic in TOPIC_BY_EVENT.values())
        self._lag = lag
        self._clock = clock
        self._poll_lock = threading.Lock()

    # -- recording ---------------------------------------------------------------------------

    def record(self, event: Envelope) -> bool:
        """Add an event to its order's timeline and the figures; return False for one seen before."""
        _check(event)
        return self._record([event])[0]

    def record_many(self, events: Sequence[Envelope]) -> dict[str, InvalidOrderId]:
        """Record a batch of events in a few round trips; return the refused ones by event id."""
        refused: dict[str, InvalidOrderId] = {}
        valid = []
        for event in events:
            try:
                _check(event)
                valid.append(event)
            except InvalidOrderId as err:
                refused[event.event_id] = err
        self._record(valid)
        return refused

    def _record(self, events: Sequence[Envelope]) -> list[bool]:
        """Record events; return, for each, whether it was new to its timeline.

        Idempotent steps first, the timelines (which also detect redeliveries) next, the figures
        and open-order bookkeeping last: a retry after a failure part-way finishes what the
        first try began, and figures move only for events new to a timeline, so once.
        """
        now = self._clock()
        items = [timeline_event(event, now) for event in events]
        self._recent.add_many([(event.order_id, item) for event, item in zip(events, items, strict=True)])
        # Most events only need adding, which goes in bulk; the first and last of an order also
        # decide its open/closed state and its duration, which needs the timeline they leave.
        middle = [i for i, event in enumerate(events) if event.event_type not in ENDS]
        entries = [(events[i].order_id, events[i].customer_id, items[i]) for i in middle]
        added = dict(zip(middle, self._timelines.append_many(entries), strict=True))
        for i in middle:
            if added[i]:
                self._count(items[i], events[i].data)
        opened: dict[str, datetime] = {}
        closed: set[str] = set()
        for i, event in enumerate(events):
            if i in added:
                continue
            item = items[i]
            timeline = self._timelines.append(event.order_id, event.customer_id, item)
            added[i] = timeline is not None
            if timeline is None:
                timeline = self._timelines.get(event.order_id)  # a redelivery finishes the bookkeeping
            else:
                self._count(item, event.data)
                if (seconds := completed_duration(timeline, item)) is not None:
                    self._stats.increment(stats.duration_counters(seconds))
            if timeline is None:
                continue
            if item.event_type in TERMINAL_EVENTS:
                closed.add(event.order_id)
            elif timeline.status == "in_progress":
                opened[event.order_id] = item.timestamp
        self._timelines.track({k: v for k, v in opened.items() if k not in closed}, closed)
        return [added[i] for i in range(len(events))]

    def _count(self, item: TimelineEvent, data: dict[str, Any]) -> None:
        self._stats.increment(stats.event_counters(item, data))
        per_minute = stats.minute_counters(item)
        if per_minute and self._is_recent(item.timestamp):
            self._stats.increment_minute(stats.minute_key(item.timestamp), per_minute)

    def _is_recent(self, moment: datetime) -> bool:
        age = self._clock() - moment
        return timedelta(minutes=-5) <= age <= timedelta(minutes=stats.MINUTES_KEPT)

    def record_dead_letter(self, raw: RawMessage) -> bool:
        """Store a raw dead-letter message; return False when it was stored before."""
        if not self._letters.add(dead_letter(raw, self._clock())):
            return False
        self._stats.increment({"dlq_total": 1})
        return True

    def housekeep(self) -> None:
        """Trim the recent-events feed and old minute buckets; forget open orders that have ended."""
        now = self._clock()
        self._recent.trim(self._settings.recent_events_kept)
        self._stats.trim_minutes(stats.minute_key(now - timedelta(minutes=stats.MINUTES_KEPT)))
        # Two consumers may handle an order's first and last events at once and leave it marked
        # open; the timeline knows better. Orders open for a day are given up on (and logged).
        # Each pass reads a bounded number of timelines and an order still running is not read
        # again for a while: under a backlog of thousands of slow orders this job would otherwise
        # re-read them all every pass and slow down the very store that is behind.
        cutoff = now - timedelta(seconds=self._settings.alerts.stuck_saga_s)
        ended: list[str] = []
        running: list[str] = []
        for candidate in self._timelines.due_for_check(cutoff, now, self._settings.open_orders_checked):
            timeline = self._timelines.get(candidate.order_id)
            if timeline is not None and timeline.status != "in_progress":
                ended.append(candidate.order_id)
            elif now - candidate.created_at > OPEN_ORDER_RETENTION:
                logger.warning("order %s never finished; no longer reporting it as stuck", candidate.order_id)
                ended.append(candidate.order_id)
            else:
                running.append(candidate.order_id)
        self._timelines.track({}, ended)
        self._timelines.check_later(running, now + OPEN_ORDER_RECHECK)
        stuck = rules.StuckOrders.of(self._timelines.open_before(cutoff, OPEN_ORDERS_SCANNED), OPEN_ORDERS_SCANNED)
        self._stats.set({"stuck": stuck.figures()})

    # -- health ------------------------------------------------------------------------------

    def poll_health(self) -> list[ServiceHealth]:
        """Ask every service for its detailed health (in parallel) and store the outcomes."""
        previous = {h.service: h for h in self._health.all()}
        with ThreadPoolExecutor(max_workers=max(1, len(self._services))) as pool:
            checked = list(pool.map(lambda s: self._probe.check(*s), self._services))
        polled = [follow_health(previous.get(h.service), h) for h in checked]
        for health in polled:
            self._health.save(health)
        totals = self._stats.totals()
        last = totals.dlq_checkpoints.get("last", totals.dlq_total)
        self._stats.set({"dlq_checkpoints.prev": last, "dlq_checkpoints.last": totals.dlq_total})
        return polled

    def current_health(self) -> list[ServiceHealth]:
        """Return the stored health; poll now if the poller has not run (recently)."""
        with self._poll_lock:
            health = self._configured(self._health.all())
            newest = max((h.checked_at for h in health), default=None)
            max_age = 3 * self._settings.health_poll_interval_s
            if newest is None or (self._clock() - newest).total_seconds() > max_age:
                health = self._configured(self.poll_health())
        return health

    def _configured(self, health: list[ServiceHealth]) -> list[ServiceHealth]:
        names = {name for name, _url in self._services}
        return sorted((h for h in health if h.service in names), key=lambda h: h.service)

    def status(self) -> tuple[str, list[ServiceHealth], datetime | None]:
        """Return the overall status, each service's health and when it was checked."""
        health = self.current_health()
        return overall_status(health), health, max((h.checked_at for h in health), default=None)

    # -- figures -----------------------------------------------------------------------------

    def performance(self) -> dict[str, Any]:
        """Return throughput, success rates and order-duration percentiles."""
        now = self._clock()
        summary = stats.performance(self._stats.totals(), self._minutes(now), now)
        return {**summary, "computed_at": iso(now)}

    def alerts(self) -> list[rules.Alert]:
        """Evaluate every alert rule against the current figures."""
        now = self._clock()
        totals = self._stats.totals()
        thresholds = self._settings.alerts
        return rules.evaluate(
            health=self.current_health(),
            minutes=self._minutes(now),
            p95_s=stats.quantile(totals.cumulative_buckets(), 0.95),
            stuck=rules.StuckOrders.from_figures(totals.stuck),
            dlq_growth=totals.dlq_growth,
            thresholds=thresholds,
            now=now,
        )

    def metrics(self) -> MetricsSnapshot:
        """Return the figures the Prometheus exposition shows."""
        lag = self._lag() if self._lag else None
        return MetricsSnapshot(self._stats.totals(), self._configured(self._health.all()), dict(lag or {}) or None)

    def _minutes(self, now: datetime) -> dict[str, dict[str, int]]:
        return self._stats.minutes(stats.minute_key(now - timedelta(minutes=stats.MINUTES_KEPT)))

    # -- orders and events -------------------------------------------------------------------

    def timeline(self, order_id: str) -> Timeline:
        """Return one order's timeline."""
        timeline = self._timelines.get(order_id)
        if timeline is None:
            raise UnknownOrder(f"no events seen for order {order_id}")
        return timeline

    def recent_events(self, limit: int) -> list[tuple[str, TimelineEvent]]:
        """Return the latest events of all orders as (order id, event), newest first."""
        return self._recent.newest(limit)

    def recent_orders(self, limit: int, status: str | None = None) -> list[Timeline]:
        """Return the timelines of the orders with the latest events (or latest completions/failures)."""
        pairs = self._recent.newest(min(self._settings.recent_events_kept, limit * 20), STATUS_EVENT.get(status or ""))
        order_ids = list(dict.fromkeys(order_id for order_id, _event in pairs))[:limit]
        return [t for t in (self._timelines.get(order_id) for order_id in order_ids) if t is not None]

    # -- dead letters ------------------------------------------------------------------------

    def dead_letters(self, limit: int) -> tuple[list[DeadLetter], int]:
        """Return the latest dead letters, newest first, and how many there are in all."""
        # limit=0 asks for the count alone (the dashboard): no read of the dead letters themselves.
        return (self._letters.newest(limit) if limit else []), self._stats.totals().dlq_total

    def dead_letter(self, letter_id: str) -> DeadLetter:
        """Return one dead letter."""
        letter = self._letters.get(letter_id)
        if letter is None:
            raise UnknownDeadLetter(f"no dead letter {letter_id}")
        return letter

    def replay(self, letter_id: str) -> DeadLetter:
        """Publish a dead letter's original key and value to its original topic again."""
        letter = self.dead_letter(letter_id)
        if letter.topic not in self._replayable:
            raise NotReplayable(f"dead letter {letter_id} has no event topic to go back to: {letter.topic!r}")
        self._publisher.produce_sync(
            letter.topic,
            letter.raw_key(),
            letter.raw_value(),
            headers=[("replayed_from", letter.id.encode())],
            timeout=REPLAY_TIMEOUT_S,
        )
        logger.info("replayed dead letter %s to %s", letter.id, letter.topic)
        return self._letters.mark_replayed(letter.id, self._clock()) or letter


def _check(event: Envelope) -> None:
    if len(event.order_id) > MAX_ORDER_ID_LENGTH:
        raise InvalidOrderId(f"order id longer than {MAX_ORDER_ID_LENGTH} characters")
