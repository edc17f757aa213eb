"""Performance math: histogram percentiles, per-minute rates, success rates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.monitoring.stats import Totals, bucket_for, performance, quantile, rates, window_count
from tests.unit.monitoring.conftest import World

NOW = datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC)  # half-way through minute 12:00


def totals_with(durations: dict[str, int], total_s: float = 0.0) -> Totals:
    return Totals(duration_buckets=durations, duration_count=sum(durations.values()), duration_sum=total_s)


def test_durations_fall_in_the_first_bucket_that_holds_them():
    assert bucket_for(0.05) == "0_1"
    assert bucket_for(0.1) == "0_1"
    assert bucket_for(1.7) == "2_5"
    assert bucket_for(9999) == "inf"


def test_percentiles_interpolate_within_a_bucket():
    cumulative = totals_with({"1": 50, "2_5": 50}).cumulative_buckets()
    assert quantile(cumulative, 0.5) == pytest.approx(1.0)
    assert quantile(cumulative, 0.75) == pytest.approx(1.75)
    assert quantile(cumulative, 0.95) == pytest.approx(2.35)


def test_percentiles_of_the_open_top_bucket_report_the_highest_bound():
    assert quantile(totals_with({"inf": 10}).cumulative_buckets(), 0.99) == 600.0


def test_percentiles_of_nothing_are_none():
    assert quantile(Totals().cumulative_buckets(), 0.5) is None


def test_cumulative_buckets_end_with_the_total_at_infinity():
    pairs = totals_with({"0_5": 2, "5": 1, "inf": 1}).cumulative_buckets()
    assert pairs[-1] == (float("inf"), 4)
    assert dict(pairs)[0.5] == 2 and dict(pairs)[5.0] == 3


def test_window_counts_weight_the_minute_that_is_partly_outside():
    minutes = {"2025-03-01T12:00": {"created": 6}, "2025-03-01T11:59": {"created": 4}}
    # Window of one minute at 12:00:30 = all of 12:00 so far + the later half of 11:59.
    assert window_count(minutes, NOW, 1, "created") == pytest.approx(8)
    assert rates(minutes, NOW, "created") == {"1m": 8.0, "5m": 2.0, "15m": 0.67}


def test_success_rates_need_finished_orders():
    assert Totals().success_rate is None
    assert Totals(orders_completed=3, orders_failed={"cancelled": 1}).success_rate == 0.75
    assert Totals(payments_completed=1, payments_failed=1).payment_success_rate == 0.5


def test_performance_reports_rates_success_and_duration_percentiles():
    totals = Totals(
        orders_created=10,
        orders_completed=9,
        orders_failed={"out_of_stock": 1},
        duration_buckets={"1": 9, "2_5": 1},
        duration_count=10,
        duration_sum=8.0,
        dlq_total=2,
    )
    summary = performance(totals, {"2025-03-01T12:00": {"created": 3}}, NOW)
    assert summary["orders_per_minute"]["1m"] == 3.0
    assert summary["success_rate"] == 0.9
    assert summary["order_duration_s"]["avg"] == 0.8
    assert summary["order_duration_s"]["p50"] == pytest.approx(0.5 + 0.5 * 5 / 9, abs=1e-3)
    assert summary["totals"]["orders_failed"] == 1
    assert summary["totals"]["dlq_total"] == 2


def test_service_performance_reads_the_shared_figures(world: World):
    world.figures.increment({"orders_created": 4, "orders_completed": 3, "orders_failed.cancelled": 1})
    world.figures.increment_minute("2025-03-01T12:00", {"created": 4})
    summary = world.service.performance()
    assert summary["success_rate"] == 0.75
    assert summary["orders_per_minute"]["1m"] == 4.0
    assert summary["computed_at"] == "2025-03-01T12:00:30.000Z"
