"""Prometheus exposition of the shared figures, built per scrape from the stats document."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from services.monitoring.service import MetricsSnapshot

logger = logging.getLogger(__name__)

CONSUMER_GROUPS = (
    "order-service",
    "payment-service",
    "inventory-service",
    "notification-service",
    "orchestrator-service",
    "monitoring-service",
)


class StatsCollector:
    """Yield the ecommerce_* metric families from one snapshot of the figures."""

    def __init__(self, snapshot: MetricsSnapshot | None = None) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        # Names only, so the registry can check for clashes without reading the figures.
        return _families(None)

    def collect(self) -> Iterator[Metric]:
        return _families(self._snapshot)


def _families(snapshot: MetricsSnapshot | None) -> Iterator[Metric]:
    created = CounterMetricFamily("ecommerce_orders_created_total", "Orders created")
    completed = CounterMetricFamily("ecommerce_orders_completed_total", "Orders completed")
    failed = CounterMetricFamily("ecommerce_orders_failed_total", "Orders failed, by reason", labels=["reason"])
    payment_rate = GaugeMetricFamily(
        "ecommerce_payment_success_rate", "Completed payments / (completed + failed payments)"
    )
    dlq = CounterMetricFamily("ecommerce_dlq_messages_total", "Messages received on the dead-letter topic")
    service_up = GaugeMetricFamily(
        "ecommerce_service_up", "1 when the latest health poll succeeded", labels=["service"]
    )
    if snapshot is None:
        yield from (created, completed, failed, payment_rate, dlq, service_up)
        yield HistogramMetricFamily("ecommerce_order_duration_seconds", "Order creation to final event")
        yield GaugeMetricFamily("ecommerce_consumer_lag", "Messages not yet consumed", labels=["group"])
        return
    totals = snapshot.totals
    created.add_metric([], totals.orders_created)
    completed.add_metric([], totals.orders_completed)
    for reason, count in sorted(totals.orders_failed.items()):
        failed.add_metric([reason], count)
    if totals.payment_success_rate is not None:
        payment_rate.add_metric([], totals.payment_success_rate)
    dlq.add_metric([], totals.dlq_total)
    for health in snapshot.health:
        service_up.add_metric([health.service], 1.0 if health.status == "up" else 0.0)
    yield from (created, completed, failed, payment_rate, dlq, service_up)
    yield HistogramMetricFamily(
        "ecommerce_order_duration_seconds",
        "Order creation to final event",
        buckets=[(floatToGoString(bound), count) for bound, count in totals.cumulative_buckets()],
        sum_value=totals.duration_sum,
    )
    if snapshot.lag is not None:
        lag = GaugeMetricFamily("ecommerce_consumer_lag", "Messages not yet consumed", labels=["group"])
        for group, value in sorted(snapshot.lag.items()):
            lag.add_metric([group], value)
        yield lag


def render(snapshot: MetricsSnapshot) -> bytes:
    """Return the Prometheus text exposition of one snapshot."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(snapshot))
    return generate_latest(registry)


class ConsumerLagReader:
    """Read consumer lag in the background so a slow or absent broker cannot stall a scrape."""

    def __init__(self, read: Callable[[], Mapping[str, int]], wait_s: float = 3.0) -> None:
        self._read = read
        self._wait = wait_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consumer-lag")
        self._future: Future[Mapping[str, int]] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Mapping[str, int] | None:
        with self._lock:
            # One read at a time: while a slow read runs, later scrapes wait on the same one.
            if self._future is None or self._future.done():
                self._future = self._executor.submit(self._read)
            future = self._future
        try:
            return future.result(timeout=self._wait)
        except FutureTimeout:
            logger.warning("consumer lag not available within %.1fs; leaving it out", self._wait)
        except Exception as err:
            logger.warning("consumer lag not available, leaving it out: %s", err)
        return None
