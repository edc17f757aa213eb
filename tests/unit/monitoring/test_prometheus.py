"""The Prometheus exposition carries every ecommerce_* family, built from the shared figures."""

from __future__ import annotations

import threading
import time

from prometheus_client.parser import text_string_to_metric_families

from services.monitoring.prometheus import ConsumerLagReader, render
from tests.unit.monitoring.conftest import World


def families(world: World) -> dict[str, object]:
    text = render(world.service.metrics()).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def test_the_exposition_holds_every_family_with_the_figures(world: World):
    world.figures.increment(
        {
            "orders_created": 5,
            "orders_completed": 3,
            "orders_failed.out_of_stock": 2,
            "payments_completed": 3,
            "payments_failed": 1,
            "dlq_total": 4,
            "duration_buckets.1": 2,
            "duration_buckets.inf": 1,
            "duration_count": 3,
            "duration_sum": 901.5,
        }
    )
    world.probe.statuses["payment"] = "down"
    world.service.poll_health()
    found = families(world)
    assert samples(found["ecommerce_orders_created"]) == {("ecommerce_orders_created_total", ()): 5}
    assert samples(found["ecommerce_orders_completed"]) == {("ecommerce_orders_completed_total", ()): 3}
    assert samples(found["ecommerce_orders_failed"]) == {
        ("ecommerce_orders_failed_total", (("reason", "out_of_stock"),)): 2
    }
    assert samples(found["ecommerce_payment_success_rate"]) == {("ecommerce_payment_success_rate", ()): 0.75}
    assert samples(found["ecommerce_dlq_messages"]) == {("ecommerce_dlq_messages_total", ()): 4}
    assert samples(found["ecommerce_consumer_lag"]) == {("ecommerce_consumer_lag", (("group", "order-service"),)): 3}
    up = samples(found["ecommerce_service_up"])
    assert up[("ecommerce_service_up", (("service", "payment"),))] == 0
    assert up[("ecommerce_service_up", (("service", "order"),))] == 1
    histogram = samples(found["ecommerce_order_duration_seconds"])
    assert histogram[("ecommerce_order_duration_seconds_bucket", (("le", "1.0"),))] == 2
    assert histogram[("ecommerce_order_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert histogram[("ecommerce_order_duration_seconds_count", ())] == 3
    assert histogram[("ecommerce_order_duration_seconds_sum", ())] == 901.5


def test_consumer_lag_is_left_out_when_it_cannot_be_read(world: World):
    world.lag = None
    found = families(world)
    assert "ecommerce_consumer_lag" not in found
    assert "ecommerce_orders_created" in found


def test_the_endpoint_serves_the_exposition_as_text(world: World, make_settings):
    from services.monitoring.app import create_app

    client = create_app(make_settings("monitoring"), service=world.service).test_client()
    response = client.get("/metrics/prometheus")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "ecommerce_orders_created_total 0.0" in response.get_data(as_text=True)
    assert client.get("/metrics").status_code == 200


def test_a_failing_lag_read_gives_none():
    def broken() -> dict[str, int]:
        raise RuntimeError("broker unreachable")

    assert ConsumerLagReader(broken, wait_s=1)() is None


def test_a_slow_lag_read_gives_none_in_time_and_its_result_later():
    release = threading.Event()

    def slow() -> dict[str, int]:
        release.wait(5)
        return {"g": 1}

    reader = ConsumerLagReader(slow, wait_s=0.1)
    started = time.monotonic()
    assert reader() is None
    assert time.monotonic() - started < 1
    release.set()
    assert reader() == {"g": 1}
