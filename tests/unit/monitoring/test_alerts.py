"""Alert rules: each fires above its threshold and stays quiet below it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.monitoring import alerts
from services.monitoring.domain import OpenOrder, ServiceHealth
from tests.unit.monitoring.conftest import World, envelope

NOW = datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC)


def test_a_down_service_raises_a_critical_alert_and_a_degraded_one_a_warning():
    found = alerts.service_alerts(
        [
            ServiceHealth("order", "up", NOW),
            ServiceHealth("payment", "down", NOW, error="ConnectionError", consecutive_failures=3, down_since=NOW),
            ServiceHealth("inventory", "degraded", NOW, consecutive_failures=1),
        ]
    )
    assert [(a.name, a.severity, a.value) for a in found] == [
        ("service_down", "critical", 3),
        ("service_degraded", "warning", 1),
    ]
    assert found[0].since == NOW
    assert "payment is down" in found[0].message


def test_error_rate_above_the_threshold_over_fifteen_minutes_alerts():
    minutes = {"2025-03-01T11:50": {"completed": 8, "failed": 2}}
    alert = alerts.error_rate_alert(minutes, NOW, 0.05, 15)
    assert alert is not None and alert.value == 0.2


def test_error_rate_at_or_below_the_threshold_or_without_orders_is_quiet():
    assert alerts.error_rate_alert({"2025-03-01T11:50": {"completed": 19, "failed": 1}}, NOW, 0.05, 15) is None
    assert alerts.error_rate_alert({}, NOW, 0.05, 15) is None


def test_failures_older_than_the_window_do_not_count():
    assert alerts.error_rate_alert({"2025-03-01T11:40": {"failed": 5}}, NOW, 0.05, 15) is None
    wider = alerts.error_rate_alert({"2025-03-01T11:40": {"failed": 5}}, NOW, 0.05, 30)
    assert wider is not None and "last 30 minutes" in wider.message


def test_slow_processing_alerts_only_above_the_threshold():
    assert alerts.slow_processing_alert(31.0, 30).name == "slow_processing"
    assert alerts.slow_processing_alert(30.0, 30) is None
    assert alerts.slow_processing_alert(None, 30) is None


def test_stuck_orders_alert_with_their_count_and_oldest():
    oldest = OpenOrder("old", NOW - timedelta(seconds=500))
    alert = alerts.stuck_sagas_alert(alerts.StuckOrders.of([oldest, OpenOrder("next", NOW)], limit=10), 120)
    assert (alert.value, alert.since) == (2, NOW - timedelta(seconds=500))
    assert alert.message.startswith("2 order(s)") and "old" in alert.message
    assert alerts.stuck_sagas_alert(alerts.StuckOrders.of([oldest], limit=1), 120).message.startswith("1+ order(s)")
    assert alerts.stuck_sagas_alert(alerts.StuckOrders(), 120) is None


def test_dlq_growth_alerts_from_the_threshold_on():
    assert alerts.dlq_growth_alert(1, 1).value == 1
    assert alerts.dlq_growth_alert(0, 1) is None


def test_service_alerts_come_from_the_health_poll(world: World):
    world.probe.statuses["payment"] = "down"
    world.service.poll_health()
    names = [(a.name, a.message.split(":")[0]) for a in world.service.alerts()]
    assert names == [("service_down", "payment is down")]


def test_a_quiet_system_has_no_alerts(world: World):
    assert world.service.alerts() == []


def test_stuck_orders_are_counted_by_housekeeping_and_alerted_from_its_count(world: World):
    world.service.record(envelope("OrderCreated", "o-stuck", world.clock.now - timedelta(seconds=121)))
    world.service.record(envelope("OrderCreated", "o-fresh", world.clock.now - timedelta(seconds=5)))
    assert [a for a in world.service.alerts() if a.name == "stuck_sagas"] == []  # not counted yet
    world.service.housekeep()
    found = [a for a in world.service.alerts() if a.name == "stuck_sagas"]
    assert [(a.value, a.since) for a in found] == [(1, world.clock.now - timedelta(seconds=121))]
    assert "o-stuck" in found[0].message


def test_dlq_growth_is_measured_against_the_poll_before_the_last(world: World):
    world.service.poll_health()
    world.figures.increment({"dlq_total": 2})
    assert [a.value for a in world.service.alerts() if a.name == "dlq_growth"] == [2]
    world.service.poll_health()  # the window now spans the growth
    assert [a.value for a in world.service.alerts() if a.name == "dlq_growth"] == [2]
    world.service.poll_health()  # no growth since
    assert [a for a in world.service.alerts() if a.name == "dlq_growth"] == []


def test_slow_orders_and_high_error_rate_come_from_the_figures(world: World):
    world.figures.increment({"duration_buckets.60": 10, "duration_count": 10, "duration_sum": 400})
    world.figures.increment_minute("2025-03-01T12:00", {"completed": 1, "failed": 1})
    assert {a.name for a in world.service.alerts()} == {"slow_processing", "high_error_rate"}
    assert world.service.alerts()[0].name == "high_error_rate"  # critical first
