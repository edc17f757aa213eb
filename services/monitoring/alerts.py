"""Alert rules: each takes current figures and a threshold and says whether something is wrong."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from services.monitoring.domain import OpenOrder, ServiceHealth
from services.monitoring.stats import window_count
from shared.config import AlertThresholds

ERROR_RATE_WINDOW_MIN = 15


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


def error_rate_alert(minutes: Mapping[str, Mapping[str, int]], now: datetime, threshold: float) -> Alert | None:
    """Alert when failed / (completed + failed) over the last 15 minutes exceeds the threshold."""
    failed = window_count(minutes, now, ERROR_RATE_WINDOW_MIN, "failed")
    finished = failed + window_count(minutes, now, ERROR_RATE_WINDOW_MIN, "completed")
    if finished <= 0 or failed / finished <= threshold:
        return None
    rate = round(failed / finished, 4)
    return Alert(
        "high_error_rate",
        "critical",
        f"{rate:.1%} of orders failed in the last {ERROR_RATE_WINDOW_MIN} minutes",
        rate,
        threshold,
    )


def slow_processing_alert(p95_s: float | None, threshold_s: float) -> Alert | None:
    """Alert when the 95th percentile of order durations is above the threshold."""
    if p95_s is None or p95_s <= threshold_s:
        return None
    return Alert("slow_processing", "warning", f"95% of orders take up to {p95_s:.1f}s to finish", p95_s, threshold_s)


def stuck_sagas_alert(open_orders: Iterable[OpenOrder], now: datetime, threshold_s: float) -> Alert | None:
    """Alert when orders were created longer ago than the threshold and have not ended."""
    stuck = sorted(
        (o for o in open_orders if (now - o.created_at).total_seconds() > threshold_s),
        key=lambda o: o.created_at,
    )
    if not stuck:
        return None
    return Alert(
        "stuck_sagas",
        "warning",
        f"{len(stuck)} order(s) without a final event for over {threshold_s:g}s (oldest {stuck[0].order_id})",
        len(stuck),
        threshold_s,
        since=stuck[0].created_at,
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
    open_orders: Iterable[OpenOrder],
    dlq_growth: int,
    thresholds: AlertThresholds,
    now: datetime,
) -> list[Alert]:
    """Run every rule; critical alerts first."""
    found = [
        *service_alerts(health),
        error_rate_alert(minutes, now, thresholds.error_rate),
        slow_processing_alert(p95_s, thresholds.slow_order_s),
        stuck_sagas_alert(open_orders, now, thresholds.stuck_saga_s),
        dlq_growth_alert(dlq_growth, thresholds.dlq_growth),
    ]
    alerts = [a for a in found if a is not None]
    return sorted(alerts, key=lambda a: a.severity != "critical")
