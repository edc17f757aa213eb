"""The payment HTTP API: status codes, bodies and validation, on in-memory fakes."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.payment.app import bootstrap, create_app
from services.payment.gateway import SimulatedGateway
from services.payment.service import PaymentService
from shared.config import Settings
from tests.unit.payment.fakes import InMemoryPaymentRepository, InMemoryStoredCardRepository, in_memory_vault

SEED_DECLINED = {
    "order_id": "test_order",
    "amount": 999999.99,
    "payment_method": "credit_card",
    "card_details": {"number": "4000000000000002"},
}
START = datetime(2025, 1, 1, tzinfo=UTC)
SEED_NEGATIVE = {"order_id": "test_order", "amount": -100.00, "payment_method": "credit_card"}


@pytest.fixture
def repo() -> InMemoryPaymentRepository:
    return InMemoryPaymentRepository()


@pytest.fixture
def client(make_settings: Callable[..., Settings], repo: InMemoryPaymentRepository) -> FlaskClient:
    settings = make_settings("payment")
    service = bootstrap(settings, payments=repo, cards=InMemoryStoredCardRepository())
    return create_app(settings, service=service).test_client()


def pay(client: FlaskClient, **fields: Any) -> Any:
    body = {"order_id": "o-1", "amount": 25.0, "payment_method": "credit_card", **fields}
    return client.post("/payments", json=body)


def error_fields(response: Any) -> list[str]:
    return [detail["field"] for detail in response.get_json()["error"]["details"]]


def test_an_approved_payment_answers_201_without_the_card_number(client: FlaskClient) -> None:
    response = pay(client, card_details={"number": "4242 4242 4242 4242"})
    assert response.status_code == 201
    body = response.get_json()
    assert body["payment_id"].startswith("pay_")
    assert (body["order_id"], body["amount"], body["status"], body["card_last4"]) == ("o-1", 25.0, "completed", "4242")
    assert "4242424242424242" not in response.get_data(as_text=True)


def test_the_seed_demo_with_a_declined_card_answers_402_every_time(client: FlaskClient) -> None:
    for _ in range(2):
        response = client.post("/payments", json=SEED_DECLINED)
        assert response.status_code == 402
        body = response.get_json()
        assert (body["status"], body["reason"], body["amount"]) == ("failed", "card_declined", 999999.99)
        assert client.get(f"/payments/{body['payment_id']}").get_json()["status"] == "failed"


def test_the_seed_demo_is_read_as_json_and_a_form_post_refused(client: FlaskClient) -> None:
    response = client.post("/payments", data=json.dumps(SEED_DECLINED), content_type="application/json")
    assert (response.status_code, response.get_json()["status"]) == (402, "failed")
    response = client.post("/payments", json=SEED_NEGATIVE)
    assert (response.status_code, error_fields(response)) == (400, ["amount"])
    form = "application/x-www-form-urlencoded"
    assert client.post("/payments", data=json.dumps(SEED_DECLINED), content_type=form).status_code == 415
    assert client.post("/payments", data="order_id=o-1&amount=5", content_type=form).status_code == 415


def test_the_seed_demo_with_a_negative_amount_answers_400_naming_amount(client: FlaskClient) -> None:
    response = client.post("/payments", json=SEED_NEGATIVE)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"
    assert error_fields(response) == ["amount"]


def test_an_amount_over_the_gateway_limit_answers_402(client: FlaskClient) -> None:
    response = pay(client, amount=10000.01)
    assert (response.status_code, response.get_json()["reason"]) == (402, "amount_over_limit")


@pytest.mark.parametrize("amount", [0, -0.001, 0.004, "25", True, None, 1e9 + 1, [], {"v": 1}])
def test_invalid_amounts_answer_400_naming_amount(client: FlaskClient, amount: Any) -> None:
    response = pay(client, amount=amount)
    assert response.status_code == 400
    assert error_fields(response) == ["amount"]


def test_non_finite_amounts_answer_400(client: FlaskClient) -> None:
    for raw in ("NaN", "Infinity"):
        data = f'{{"order_id": "o-1", "amount": {raw}, "payment_method": "credit_card"}}'
        response = client.post("/payments", data=data, content_type="application/json")
        assert response.status_code == 400
        assert error_fields(response) == ["amount"]


def test_amounts_are_rounded_to_cents(client: FlaskClient) -> None:
    assert pay(client, amount=10.456).get_json()["amount"] == 10.46
    assert pay(client, order_id="o-2", amount=7).get_json()["amount"] == 7.0


@pytest.mark.parametrize("missing", ["order_id", "amount", "payment_method"])
def test_a_missing_field_answers_400_naming_it(client: FlaskClient, missing: str) -> None:
    body = {"order_id": "o-1", "amount": 25.0, "payment_method": "credit_card"}
    del body[missing]
    response = client.post("/payments", json=body)
    assert response.status_code == 400
    assert error_fields(response) == [missing]


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"order_id": "x" * 101}, "order_id"),
        ({"order_id": "has space"}, "order_id"),
        ({"payment_method": ""}, "payment_method"),
        ({"card_details": {"number": "4242"}}, "card_details.number"),
        ({"card_details": {"number": "abcd efgh ijkl mnop"}}, "card_details.number"),
        ({"card_details": {}}, "card_details.number"),
    ],
)
def test_invalid_fields_answer_400_naming_them(client: FlaskClient, fields: dict[str, Any], name: str) -> None:
    response = pay(client, **fields)
    assert response.status_code == 400
    assert error_fields(response) == [name]


def test_bodies_that_are_not_json_are_refused(client: FlaskClient) -> None:
    assert client.post("/payments", data="amount=5", content_type="text/plain").status_code == 415
    response = client.post("/payments", data="{not json", content_type="application/json")
    assert (response.status_code, response.get_json()["error"]["code"]) == (400, "invalid_json")
    assert client.post("/payments", data=json.dumps([1]), content_type="application/json").status_code == 400


def test_paying_an_order_twice_answers_409_already_paid(client: FlaskClient) -> None:
    first = pay(client).get_json()
    response = pay(client)
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert (error["code"], error["details"]["payment_id"]) == ("already_paid", first["payment_id"])


def test_get_payment_answers_the_payment_or_404(client: FlaskClient) -> None:
    created = pay(client).get_json()
    assert client.get(f"/payments/{created['payment_id']}").get_json() == created
    response = client.get("/payments/pay_nope")
    assert (response.status_code, response.get_json()["error"]["code"]) == (404, "not_found")


def test_list_payments_of_an_order_newest_first(
    make_settings: Callable[..., Settings], repo: InMemoryPaymentRepository
) -> None:
    settings = make_settings("payment")
    ticks = itertools.count()
    service = PaymentService(
        repo,
        SimulatedGateway(settings.payment),
        vault=in_memory_vault(),
        charges_per_write=settings.payment.charges_per_write,
        clock=lambda: START + timedelta(seconds=next(ticks)),
    )
    client = create_app(settings, service=service).test_client()
    failed = client.post("/payments", json={**SEED_DECLINED, "order_id": "o-1"}).get_json()
    paid = pay(client).get_json()
    pay(client, order_id="o-2")
    body = client.get("/payments?order_id=o-1").get_json()
    assert [p["payment_id"] for p in body["payments"]] == [paid["payment_id"], failed["payment_id"]]
    assert len(client.get("/payments?order_id=o-1&limit=1").get_json()["payments"]) == 1


@pytest.mark.parametrize("query", ["", "?order_id=", f"?order_id={'x' * 101}", "?order_id=o-1&limit=0"])
def test_list_payments_needs_a_valid_order_id(client: FlaskClient, query: str) -> None:
    response = client.get(f"/payments{query}")
    assert response.status_code == 400


def test_refund_answers_the_refunded_payment_then_409(client: FlaskClient, repo: InMemoryPaymentRepository) -> None:
    created = pay(client).get_json()
    response = client.post(f"/payments/{created['payment_id']}/refund", json={"reason": "damaged"})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["refunded_amount"], body["refund_reason"]) == ("refunded", 25.0, "damaged")
    again = client.post(f"/payments/{created['payment_id']}/refund")
    assert (again.status_code, again.get_json()["error"]["code"]) == (409, "not_refundable")
    assert [e.event_type for e in repo.events] == ["PaymentRefunded"]


def test_refund_of_a_failed_payment_answers_409_and_of_an_unknown_one_404(client: FlaskClient) -> None:
    failed = client.post("/payments", json=SEED_DECLINED).get_json()
    response = client.post(f"/payments/{failed['payment_id']}/refund")
    assert (response.status_code, response.get_json()["error"]["code"]) == (409, "not_refundable")
    assert client.post("/payments/pay_nope/refund").status_code == 404


def test_health_answers_without_dependencies(client: FlaskClient) -> None:
    assert client.get("/health").get_json()["service"] == "payment"
