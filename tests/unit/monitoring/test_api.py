"""The HTTP API: shapes of the answers, 404s for unknown ids, 400s for bad parameters, the dashboard."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask.testing import FlaskClient

from services.monitoring.app import create_app
from services.monitoring.deadletters import RawMessage
from tests.unit.monitoring.conftest import World, envelope

DASHBOARD_IDS = (
    "service-health",
    "orders-per-minute",
    "success-rate",
    "recent-orders",
    "recent-failures",
    "dlq-count",
    "flow-view",
    "flow-order-id",
    "flow-load",
)


@pytest.fixture
def client(world: World) -> FlaskClient:
    return create_app(world.settings, service=world.service).test_client()


def record_order(world: World, order_id: str, outcome: str = "OrderCompleted") -> None:
    start = world.clock.now - timedelta(seconds=3)
    world.service.record(envelope("OrderCreated", order_id, start, source="order"))
    data = {"reason": "out_of_stock"} if outcome == "OrderFailed" else {}
    world.service.record(envelope(outcome, order_id, start + timedelta(seconds=2), data, source="orchestrator"))


def test_order_events_come_in_time_order(world: World, client: FlaskClient):
    record_order(world, "o1")
    body = client.get("/orders/o1/events").get_json()
    assert body["order_id"] == "o1"
    assert [e["event_type"] for e in body["events"]] == ["OrderCreated", "OrderCompleted"]
    assert set(body["events"][0]) == {"event_id", "topic", "event_type", "timestamp", "source"}
    assert body["events"][0]["timestamp"] == "2025-03-01T12:00:27.000Z"


@pytest.mark.parametrize("path", ["/orders/nope/events", "/timelines/nope", "/dlq/0-1", "/dlq/nope"])
def test_unknown_ids_answer_404(client: FlaskClient, path: str):
    response = client.get(path)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_replaying_an_unknown_dead_letter_answers_404(client: FlaskClient):
    assert client.post("/dlq/0-1/replay").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/events?limit=0",
        "/events?limit=501",
        "/events?limit=ten",
        "/dlq?limit=-1",
        "/orders/recent?limit=101",
        "/orders/recent?status=weird",
        "/timelines/" + "x" * 201,
    ],
)
def test_bad_parameters_answer_400(client: FlaskClient, path: str):
    response = client.get(path)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"


def test_recent_events_are_newest_first_and_limited(world: World, client: FlaskClient):
    record_order(world, "o1")
    body = client.get("/events?limit=1").get_json()
    assert [(e["order_id"], e["event_type"]) for e in body["events"]] == [("o1", "OrderCompleted")]
    assert len(client.get("/events").get_json()["events"]) == 2


def test_a_timeline_derives_status_events_and_duration(world: World, client: FlaskClient):
    record_order(world, "o1", "OrderFailed")
    body = client.get("/timelines/o1").get_json()
    assert body["status"] == "failed"
    assert body["failure_reason"] == "out_of_stock"
    assert body["duration_s"] == 2.0
    assert [e["event_type"] for e in body["events"]] == ["OrderCreated", "OrderFailed"]
    assert body["events"][1]["detail"] == "out_of_stock"


def test_an_unfinished_timeline_is_in_progress(world: World, client: FlaskClient):
    world.service.record(envelope("OrderCreated", "o1", world.clock.now))
    assert client.get("/timelines/o1").get_json()["status"] == "in_progress"


def test_monitoring_has_no_flows_of_its_own(world: World, client: FlaskClient):
    record_order(world, "o1")  # the saga's flows are the orchestrator's: GET :5005/flows/<order_id>
    assert client.get("/flows/o1").status_code == 404


def test_recent_orders_show_status_and_last_event(world: World, client: FlaskClient):
    record_order(world, "o1", "OrderFailed")
    record_order(world, "o2")
    orders = client.get("/orders/recent?limit=5").get_json()["orders"]
    assert {o["order_id"]: (o["status"], o["last_event"]) for o in orders} == {
        "o1": ("failed", "OrderFailed"),
        "o2": ("completed", "OrderCompleted"),
    }
    failed = client.get("/orders/recent?status=failed").get_json()["orders"]
    assert [(o["order_id"], o["failure_reason"]) for o in failed] == [("o1", "out_of_stock")]


def test_status_reports_overall_and_each_service(world: World, client: FlaskClient):
    world.probe.statuses["payment"] = "degraded"
    body = client.get("/status").get_json()
    assert body["overall"] == "degraded"
    assert body["services"]["payment"]["status"] == "degraded"
    assert body["services"]["order"]["http_status"] == 200
    assert body["checked_at"] == "2025-03-01T12:00:30.000Z"
    services = client.get("/services/health").get_json()["services"]
    assert [s["service"] for s in services] == sorted(world.settings.services)


def test_performance_has_rates_success_and_percentiles(world: World, client: FlaskClient):
    record_order(world, "o1")
    body = client.get("/performance").get_json()
    assert set(body["orders_per_minute"]) == {"1m", "5m", "15m"}
    assert body["success_rate"] == 1.0
    assert set(body["order_duration_s"]) >= {"avg", "p50", "p95", "p99"}
    assert body["totals"]["orders_created"] == 1


def test_alerts_are_listed_with_thresholds(world: World, client: FlaskClient):
    world.probe.statuses["order"] = "down"
    alerts = client.get("/alerts").get_json()["alerts"]
    assert alerts[0]["name"] == "service_down"
    assert set(alerts[0]) == {"name", "severity", "message", "since", "value", "threshold"}


def test_dead_letters_are_listed_shown_and_replayed(world: World, client: FlaskClient):
    headers = [("original_topic", b"orders.created"), ("error", b"boom")]
    world.service.record_dead_letter(RawMessage(0, 5, b"k", b"not json", headers))
    listing = client.get("/dlq").get_json()
    assert listing["total"] == 1
    assert listing["entries"][0]["id"] == "0-5"
    assert client.get("/dlq/0-5").get_json()["value"] == "not json"
    response = client.post("/dlq/0-5/replay")
    assert response.status_code == 202
    assert response.get_json() == {"id": "0-5", "topic": "orders.created", "replayed_count": 1}
    assert world.publisher.sent[0][0] == "orders.created"


def test_replay_without_an_event_topic_answers_409(world: World, client: FlaskClient):
    world.service.record_dead_letter(RawMessage(0, 6, None, b"x", []))
    assert client.post("/dlq/0-6/replay").status_code == 409


def test_replay_while_kafka_is_down_answers_503(world: World, client: FlaskClient):
    world.service.record_dead_letter(RawMessage(0, 5, b"k", b"v", [("original_topic", b"orders.created")]))
    world.publisher.down = True
    response = client.post("/dlq/0-5/replay")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "broker_unavailable"


def test_long_dead_letter_values_are_cut_in_the_listing_only(world: World, client: FlaskClient):
    world.service.record_dead_letter(RawMessage(0, 7, None, b"a" * 2000, []))
    entry = client.get("/dlq").get_json()["entries"][0]
    assert len(entry["value"]) == 500 and entry["value_truncated"] is True
    assert len(client.get("/dlq/0-7").get_json()["value"]) == 2000


@pytest.mark.parametrize("path", ["/", "/dashboard"])
def test_the_dashboard_is_one_self_contained_page_with_stable_ids(client: FlaskClient, path: str):
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    for element_id in DASHBOARD_IDS:
        assert f'id="{element_id}"' in html
    assert not re.search(r"""(src|href)=["']?https?:""", html)  # nothing loaded from elsewhere
    assert "innerHTML" not in html
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_the_dlq_count_alone_reads_no_dead_letters(client: FlaskClient):
    body = client.get("/dlq?limit=0").get_json()
    assert body["entries"] == [] and "total" in body
