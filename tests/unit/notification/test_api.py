"""The notification HTTP API: status codes, bodies and validation, on in-memory fakes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.notification.app import bootstrap, create_app
from services.notification.domain import Undeliverable
from shared.config import Settings
from tests.unit.notification.fakes import InMemoryNotificationRepository, RecordingSender

SEED_BODY = {"customer_id": "customer_123", "type": "order_confirmation", "message": "Your order has been confirmed!"}


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Callable[[RecordingSender], FlaskClient]:
    def make(sender: RecordingSender) -> FlaskClient:
        settings = make_settings("notification")
        service = bootstrap(settings, notifications=InMemoryNotificationRepository(), sender=sender)
        return create_app(settings, service=service).test_client()

    return make


@pytest.fixture
def client(make_client: Callable[[RecordingSender], FlaskClient], sender: RecordingSender) -> FlaskClient:
    return make_client(sender)


def error_fields(response: Any) -> list[str]:
    return [detail["field"] for detail in response.get_json()["error"]["details"]]


def test_a_notification_is_sent_at_once_and_answers_201(client: FlaskClient, sender: RecordingSender) -> None:
    response = client.post("/notifications", json=SEED_BODY)
    assert response.status_code == 201
    body = response.get_json()
    assert body["notification_id"].startswith("ntf_")
    assert (body["status"], body["channel"], body["type"], body["attempts"]) == (
        "sent",
        "email",
        "order_confirmation",
        1,
    )
    assert body["subject"] == "Order confirmation"
    assert [n.notification_id for n in sender.sent] == [body["notification_id"]]


def test_optional_fields_are_kept(client: FlaskClient) -> None:
    fields = {"channel": "sms", "customer_email": "ann@example.com", "subject": "Hello", "order_id": "o-1"}
    body = client.post("/notifications", json={**SEED_BODY, **fields}).get_json()
    assert {key: body[key] for key in fields} == fields


def test_a_bare_curl_post_of_json_is_refused_as_a_form(client: FlaskClient) -> None:
    # Any web page can make a browser post a form: only application/json is read.
    response = client.post(
        "/notifications", data=json.dumps(SEED_BODY), content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": "x" * 101}, "customer_id"),
        ({"type": ""}, "type"),
        ({"type": "   "}, "type"),
        ({"type": "x" * 51}, "type"),
        ({"message": ""}, "message"),
        ({"channel": "fax"}, "channel"),
        ({"customer_email": "not-an-email"}, "customer_email"),
        ({"subject": "two\nlines"}, "subject"),
        ({"type": 5}, "type"),
    ],
)
def test_invalid_fields_answer_400_naming_them(client: FlaskClient, fields: dict[str, Any], name: str) -> None:
    response = client.post("/notifications", json={**SEED_BODY, **fields})
    assert response.status_code == 400
    assert error_fields(response) == [name]


@pytest.mark.parametrize("missing", ["customer_id", "type", "message"])
def test_a_missing_field_answers_400_naming_it(client: FlaskClient, missing: str) -> None:
    body = {key: value for key, value in SEED_BODY.items() if key != missing}
    response = client.post("/notifications", json=body)
    assert (response.status_code, error_fields(response)) == (400, [missing])


def test_bodies_that_are_not_json_are_refused(client: FlaskClient) -> None:
    assert client.post("/notifications", data="hello", content_type="text/plain").status_code == 415
    assert client.post("/notifications", data="{", content_type="application/json").status_code == 400


def test_a_failed_send_answers_502_and_is_stored_failed(make_client: Callable[[RecordingSender], FlaskClient]) -> None:
    client = make_client(RecordingSender(ConnectionError("smtp down")))
    response = client.post("/notifications", json=SEED_BODY)
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "delivery_failed"
    stored = client.get(f"/notifications/{error['details']['notification_id']}").get_json()
    assert (stored["status"], stored["attempts"]) == ("failed", 1)


def test_an_undeliverable_notification_answers_422(make_client: Callable[[RecordingSender], FlaskClient]) -> None:
    client = make_client(RecordingSender(Undeliverable("no address")))
    response = client.post("/notifications", json=SEED_BODY)
    assert (response.status_code, response.get_json()["error"]["code"]) == (422, "undeliverable")


def test_get_notification_answers_it_or_404(client: FlaskClient) -> None:
    created = client.post("/notifications", json=SEED_BODY).get_json()
    assert client.get(f"/notifications/{created['notification_id']}").get_json() == created
    response = client.get("/notifications/ntf_nope")
    assert (response.status_code, response.get_json()["error"]["code"]) == (404, "not_found")


def test_list_notifications_of_a_customer_newest_first(client: FlaskClient) -> None:
    first = client.post("/notifications", json=SEED_BODY).get_json()
    second = client.post("/notifications", json={**SEED_BODY, "type": "shipping"}).get_json()
    client.post("/notifications", json={**SEED_BODY, "customer_id": "someone_else"})
    body = client.get("/notifications?customer_id=customer_123").get_json()
    ids = [n["notification_id"] for n in body["notifications"]]
    assert sorted(ids) == sorted([first["notification_id"], second["notification_id"]])
    assert body["notifications"][0]["created_at"] >= body["notifications"][1]["created_at"]
    assert len(client.get("/notifications?customer_id=customer_123&limit=1").get_json()["notifications"]) == 1


@pytest.mark.parametrize("query", ["", "?customer_id=", f"?customer_id={'x' * 101}", "?customer_id=c&limit=500"])
def test_list_notifications_needs_a_valid_customer_id(client: FlaskClient, query: str) -> None:
    assert client.get(f"/notifications{query}").status_code == 400
