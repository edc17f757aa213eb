"""The orchestrator's HTTP API: flow listing, flow detail and an order's timeline."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from services.orchestrator.app import bootstrap, create_app
from services.orchestrator.service import SagaService
from shared.config import Settings
from tests.unit.orchestrator.fakes import FakeClock, InMemorySagaRepository, order_created, reply


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(make_settings: Callable[..., Settings], clock: FakeClock) -> SagaService:
    return bootstrap(make_settings("orchestrator"), sagas=InMemorySagaRepository(), clock=clock)


@pytest.fixture
def client(make_settings: Callable[..., Settings], service: SagaService) -> FlaskClient:
    return create_app(make_settings("orchestrator"), service=service).test_client()


def test_flows_are_listed_newest_first(client: FlaskClient, service: SagaService, clock: FakeClock) -> None:
    service.start(order_created("o-1"))
    clock.advance(1)
    service.start(order_created("o-2", items=[]))

    body = client.get("/flows").get_json()

    assert [f["order_id"] for f in body["flows"]] == ["o-2", "o-1"]
    assert body["flows"][0] == {
        "order_id": "o-2",
        "state": "failed",
        "failure_reason": "invalid_order",
        "created_at": "2025-01-01T12:00:01.000Z",
        "updated_at": "2025-01-01T12:00:01.000Z",
    }


def test_flows_can_be_filtered_by_state_and_limited(client: FlaskClient, service: SagaService) -> None:
    for n in range(3):
        service.start(order_created(f"o-{n}"))
    service.start(order_created("o-bad", items=[]))

    assert len(client.get("/flows?state=reserving&limit=2").get_json()["flows"]) == 2
    assert [f["order_id"] for f in client.get("/flows?state=failed").get_json()["flows"]] == ["o-bad"]


@pytest.mark.parametrize("query", ["state=dancing", "limit=0", "limit=201", "limit=ten"])
def test_a_bad_listing_query_is_a_400_naming_the_field(client: FlaskClient, query: str) -> None:
    response = client.get(f"/flows?{query}")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"
    assert response.get_json()["error"]["details"][0]["field"] == query.split("=")[0]


def test_a_flow_shows_its_steps_ids_and_deadlines(client: FlaskClient, service: SagaService) -> None:
    service.start(order_created("o-1"))
    service.advance(reply("InventoryReserved", "o-1"))

    body = client.get("/flows/o-1").get_json()

    assert body["order_id"] == "o-1"
    assert body["state"] == "awaiting_payment"
    assert body["reservation_id"] == "res_o-1"
    assert body["payment_id"] == "pay_o-1"
    assert body["total_amount"] == 25.5
    assert [(s["step"], s["status"]) for s in body["steps"]] == [
        ("validate_order", "completed"),
        ("reserve_inventory", "started"),
        ("reserve_inventory", "completed"),
        ("take_payment", "started"),
    ]
    assert all("event_id" in s for s in body["steps"])
    assert body["deadlines"] == {
        "payment": "2025-01-01T12:01:00.000Z",
        "order": "2025-01-01T12:05:00.000Z",
        "next": {"at": "2025-01-01T12:01:00.000Z", "kind": "payment"},
    }
    assert "card_details" not in str(body)


def test_an_ignored_event_is_explained_in_the_flow(client: FlaskClient, service: SagaService) -> None:
    service.start(order_created("o-1"))
    service.advance(reply("OrderCancelRequested", "o-1"))
    service.advance(reply("InventoryReserved", "o-1"))

    last = client.get("/flows/o-1").get_json()["steps"][-1]

    assert last["step"] == "InventoryReserved"
    assert last["status"] == "ignored"
    assert "release follows" in last["detail"]


def test_an_unknown_flow_is_a_404(client: FlaskClient) -> None:
    response = client.get("/flows/nope")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_an_orders_events_are_its_saga_steps_in_the_order_they_happened(
    client: FlaskClient, service: SagaService, clock: FakeClock
) -> None:
    created = order_created("o-1")
    service.start(created)
    clock.advance(1)
    reserved = reply("InventoryReserved", "o-1")
    service.advance(reserved)

    response = client.get("/orders/o-1/events")

    assert response.status_code == 200
    body = response.get_json()
    assert body["order_id"] == "o-1"
    assert [(e["step"], e["status"], e["at"], e["event_id"]) for e in body["events"]] == [
        ("validate_order", "completed", "2025-01-01T12:00:00.000Z", created.event_id),
        ("reserve_inventory", "started", "2025-01-01T12:00:00.000Z", created.event_id),
        ("reserve_inventory", "completed", "2025-01-01T12:00:01.000Z", reserved.event_id),
        ("take_payment", "started", "2025-01-01T12:00:01.000Z", reserved.event_id),
    ]
    assert body["events"] == client.get("/flows/o-1").get_json()["steps"]


def test_the_events_of_an_unknown_order_are_a_404(client: FlaskClient) -> None:
    response = client.get("/orders/nope/events")

    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["error"] == {"code": "not_found", "message": "no saga for order nope", "details": None}
