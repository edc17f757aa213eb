"""Alert rules: each takes current figures and a threshold and says whether something is wrong."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.monitoring.domain import OpenOrder, ServiceHealth
from services.monitoring.stats import window_count
from shared.config import AlertThresholds


@dataclass(frozen=True)
class Alert:
    """A condition that needs a person's attention."""

    name: str
    severity: str  # critical | warning
    message: str
    value: float
    threshold: float
    since: datetime | None = None


def service_alerts(health: Iterable[ServiceHealth]) -> list[Alert]:
    """One alert per service whose latest health poll failed (down) or reported a broken dependency."""
    alerts = []
    for h in health:
        if h.status == "up":
            continue
        down = h.status == "down"
        alerts.append(
            Alert(
                name="service_down" if down else "service_degraded",
                severity="critical" if down else "warning",
                message=f"{h.service} is {h.status}" + (f": {h.error}" if h.error else ""),
                value=h.consecutive_failures,
                threshold=1,
                since=h.down_since,
            )
        )
    return alerts


def error_rate_alert(
    minutes: Mapping[str, Mapping[str, int]], now: datetime, threshold: float, window_min: int
) -> Alert | None:
    """Alert when failed / (completed + failed) over the last ``window_min`` minutes exceeds the threshold."""
    failed = window_count(minutes, now, window_min, "failed")
    finished = failed + window_count(minutes, now, window_min, "completed")
    if finished <= 0 or failed / finished <= threshold:
        return None
    rate = round(failed / finished, 4)
    return Alert(
        "high_error_rate",
        "critical",
        f"{rate:.1%} of orders failed in the last {window_min} minutes",
        rate,
        threshold,
    )


def slow_processing_alert(p95_s: float | None, threshold_s: float) -> Alert | None:
    """Alert when the 95th percentile of order durations is above the threshold."""
    if p95_s is None or p95_s <= threshold_s:
        return None
    return Alert("slow_processing", "warning", f"95% of orders take up to {p95_s:.1f}s to finish", p95_s, threshold_s)


@dataclass(frozen=True)
class StuckOrders:
    """Orders created longer ago than the threshold that have not ended, as housekeeping last
    counted them (counting scans the open orders, too costly for every request in a backlog)."""

    count: int = 0
    oldest: OpenOrder | None = None
    more: bool = False  # the count stopped at the scan's limit

    @classmethod
    def of(cls, stuck: Sequence[OpenOrder], limit: int) -> StuckOrders:
        """Summarise up to ``limit`` stuck orders, oldest first."""
        return cls(len(stuck), stuck[0] if stuck else None, len(stuck) >= limit)

    def figures(self) -> dict[str, Any]:
        """The form it is stored in among the monitoring figures."""
        oldest = self.oldest
        return {
            "count": self.count,
            "more": self.more,
            "oldest_id": oldest.order_id if oldest else None,
            "oldest_at": oldest.created_at if oldest else None,
        }

    @classmethod
    def from_figures(cls, stored: Mapping[str, Any]) -> StuckOrders:
        """Read back what ``figures`` stored (nothing stored: no stuck orders)."""
        oldest = None
        if stored.get("oldest_id") and stored.get("oldest_at"):
            oldest = OpenOrder(stored["oldest_id"], stored["oldest_at"])
        return cls(int(stored.get("count", 0)), oldest, bool(stored.get("more")))


def stuck_sagas_alert(stuck: StuckOrders, threshold_s: float) -> Alert | None:
    """Alert when orders were created longer ago than the threshold and have not ended."""
    if not stuck.count or stuck.oldest is None:
        return None
    shown = f"{stuck.count}+" if stuck.more else str(stuck.count)
    return Alert(
        "stuck_sagas",
        "warning",
        f"{shown} order(s) without a final event for over {threshold_s:g}s (oldest {stuck.oldest.order_id})",
        stuck.count,
        threshold_s,
        since=stuck.oldest.created_at,
    )


def dlq_growth_alert(growth: int, threshold: int) -> Alert | None:
    """Alert when the dead-letter queue grew by at least the threshold within the last poll window."""
    if growth < threshold:
        return None
    return Alert(
        "dlq_growth", "warning", f"{growth} new dead-letter message(s) since the last health poll", growth, threshold
    )


def evaluate(
    *,
    health: Iterable[ServiceHealth],
    minutes: Mapping[str, Mapping[str, int]],
    p95_s: float | None,
    stuck: StuckOrders,
    dlq_growth: int,
    thresholds: AlertThresholds,
    now: datetime,
) -> list[Alert]:
    """Run every rule; critical alerts first."""
    found = [
        *service_alerts(health),
        error_rate_alert(minutes, now, thresholds.error_rate, thresholds.error_rate_window_min),
        slow_processing_alert(p95_s, thresholds.slow_order_s),
        stuck_sagas_alert(stuck, thresholds.stuck_saga_s),
        dlq_growth_alert(dlq_growth, thresholds.dlq_growth),
    ]
    alerts = [a for a in found if a is not None]
    return sorted(alerts, key=lambda a: a.severity != "critical")
