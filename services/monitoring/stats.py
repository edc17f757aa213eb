"""Aggregate figures: which counters an event moves, the duration histogram and the rates read back."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.monitoring.domain import TimelineEvent, failure_reason_key

# Upper bounds (seconds) of the order-duration histogram; one more bucket catches the rest.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
INF_KEY = "inf"
MINUTES_KEPT = 60
RATE_WINDOWS = (1, 5, 15)


def bucket_key(bound: float) -> str:
    """Name a bucket by its bound without dots, which Mongo field names must not contain."""
    return f"{bound:g}".replace(".", "_")


def bucket_for(seconds: float) -> str:
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            return bucket_key(bound)
    return INF_KEY


def minute_key(moment: datetime) -> str:
    """Name the minute a moment falls in, e.g. 2024-05-01T10:42 (sorts as text)."""
    return moment.strftime("%Y-%m-%dT%H:%M")


def event_counters(event: TimelineEvent, data: Mapping[str, Any]) -> dict[str, int]:
    """Return the totals counters (dotted paths) one newly seen event increments."""
    counters = {"events_total." + event.event_type: 1}
    if event.event_type == "OrderCreated":
        counters["orders_created"] = 1
    elif event.event_type == "OrderCompleted":
        counters["orders_completed"] = 1
    elif event.event_type == "OrderFailed":
        counters["orders_failed." + failure_reason_key(data.get("reason"))] = 1
    elif event.event_type == "PaymentCompleted":
        counters["payments_completed"] = 1
    elif event.event_type == "PaymentFailed":
        counters["payments_failed"] = 1
    return counters


def minute_counters(event: TimelineEvent) -> dict[str, int]:
    """Return the per-minute counters an event moves (created, completed or failed), if any."""
    name = {"OrderCreated": "created", "OrderCompleted": "completed", "OrderFailed": "failed"}.get(event.event_type)
    return {name: 1} if name else {}


def duration_counters(seconds: float) -> dict[str, float]:
    """Return the counters that record one order duration in the histogram."""
    return {"duration_buckets." + bucket_for(seconds): 1, "duration_sum": seconds, "duration_count": 1}


@dataclass(frozen=True)
class Totals:
    """The aggregate figures, as kept in the single stats document."""

    orders_created: int = 0
    orders_completed: int = 0
    orders_failed: dict[str, int] = field(default_factory=dict)
    payments_completed: int = 0
    payments_failed: int = 0
    events_total: dict[str, int] = field(default_factory=dict)
    duration_buckets: dict[str, int] = field(default_factory=dict)
    duration_sum: float = 0.0
    duration_count: int = 0
    dlq_total: int = 0
    dlq_checkpoints: dict[str, int] = field(default_factory=dict)
    stuck: dict[str, Any] = field(default_factory=dict)  # housekeeping's last count (StuckOrders)

    @classmethod
    def from_counters(cls, nested: Mapping[str, Any]) -> Totals:
        """Build from nested counter maps, ignoring anything that is not a known figure."""
        known = {name: nested[name] for name in cls.__dataclass_fields__ if name in nested}
        return cls(**known)

    @property
    def orders_failed_total(self) -> int:
        return sum(self.orders_failed.values())

    @property
    def success_rate(self) -> float | None:
        return ratio(self.orders_completed, self.orders_completed + self.orders_failed_total)

    @property
    def payment_success_rate(self) -> float | None:
        return ratio(self.payments_completed, self.payments_completed + self.payments_failed)

    @property
    def dlq_growth(self) -> int:
        """DLQ messages since the health poll before the latest (a window of one to two polls)."""
        return self.dlq_total - self.dlq_checkpoints.get("prev", self.dlq_total)

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """Return (upper bound, count of durations <= bound) pairs, ending with +inf."""
        running, pairs = 0, []
        for bound in (*DURATION_BUCKETS, math.inf):
            running += self.duration_buckets.get(bucket_key(bound) if bound != math.inf else INF_KEY, 0)
            pairs.append((bound, running))
        return pairs


def ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def quantile(cumulative: list[tuple[float, int]], q: float) -> float | None:
    """Estimate a quantile from cumulative buckets by linear interpolation, as Prometheus does."""
    total = cumulative[-1][1] if cumulative else 0
    if total == 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # the top bucket has no upper edge: report the highest finite one
            if count == lower_count:
                return bound
            return round(lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count), 3)
        lower_bound, lower_count = bound, count
    return lower_bound


def window_count(minutes: Mapping[str, Mapping[str, int]], now: datetime, span: int, name: str) -> float:
    """Count ``name`` over the last ``span`` minutes; the minute partly outside is weighted by overlap."""
    into_minute = (now.second + now.microsecond / 1e6) / 60
    total = 0.0
    for back in range(span + 1):
        weight = 1.0 if back < span else 1.0 - into_minute
        total += weight * minutes.get(minute_key(now - timedelta(minutes=back)), {}).get(name, 0)
    return total


def rates(minutes: Mapping[str, Mapping[str, int]], now: datetime, name: str) -> dict[str, float]:
    """Return the per-minute rate of ``name`` over each standard window, e.g. {"1m": 2.0, ...}."""
    return {f"{span}m": round(window_count(minutes, now, span, name) / span, 2) for span in RATE_WINDOWS}


def performance(totals: Totals, minutes: Mapping[str, Mapping[str, int]], now: datetime) -> dict[str, Any]:
    """Summarise throughput, success and duration for GET /performance."""
    cumulative = totals.cumulative_buckets()
    avg = round(totals.duration_sum / totals.duration_count, 3) if totals.duration_count else None
    return {
        "orders_per_minute": rates(minutes, now, "created"),
        "completed_per_minute": rates(minutes, now, "completed"),
        "failed_per_minute": rates(minutes, now, "failed"),
        "success_rate": totals.success_rate,
        "payment_success_rate": totals.payment_success_rate,
        "order_duration_s": {
            "avg": avg,
            "p50": quantile(cumulative, 0.5),
            "p95": quantile(cumulative, 0.95),
            "p99": quantile(cumulative, 0.99),
            "count": totals.duration_count,
        },
        "totals": {
            "orders_created": totals.orders_created,
            "orders_completed": totals.orders_completed,
            "orders_failed": totals.orders_failed_total,
            "orders_failed_by_reason": dict(totals.orders_failed),
            "payments_completed": totals.payments_completed,
            "payments_failed": totals.payments_failed,
            "dlq_total": totals.dlq_total,
            "events_total": dict(totals.events_total),
        },
    }
