"""The order HTTP API: placing, validation, idempotency, bulk, listing and cancelling."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.order.domain import Transition, now
from services.order.service import OrderService
from tests.unit.order.fakes import FakeCardVault, InMemoryOrderRepository
from tests.unit.order.samples import CARD, order_body


def place(client: FlaskClient, body: Any = None, **headers: str) -> Any:
    return client.post("/orders", json=order_body() if body is None else body, headers=headers)


def error_fields(response: Any) -> list[str]:
    return [d["field"] for d in response.get_json()["error"]["details"]]


def test_places_a_pending_order_and_writes_its_created_event(
    client: FlaskClient, repo: InMemoryOrderRepository
) -> None:
    response = place(client)
    assert response.status_code == 201
    order = response.get_json()
    assert order["status"] == "pending"
    assert (order["customer_id"], order["total_amount"], order["payment_method"]) == ("cust-1", 44.98, "credit_card")
    assert order["items"][0] == {"product_id": "p-1", "quantity": 2, "price": 19.99}
    assert order["created_at"].endswith("Z")
    assert order["status_history"] == [{"status": "pending", "at": order["created_at"]}]
    [event] = repo.events
    assert (event.event_type, event.order_id, event.source) == ("OrderCreated", order["order_id"], "order")
    assert (event.data["payment_method_token"], event.data["card_last4"]) == ("pm_test1", "1111")
    assert "card_details" not in event.data
    assert event.data["total_amount"] == 44.98


def test_reads_an_order_back_by_id(client: FlaskClient) -> None:
    order_id = place(client).get_json()["order_id"]
    response = client.get(f"/orders/{order_id}")
    assert response.status_code == 200
    assert response.get_json()["order_id"] == order_id


def test_answers_404_for_an_unknown_order(client: FlaskClient) -> None:
    response = client.get("/orders/nope")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_defaults_the_payment_method_and_ignores_unknown_fields(client: FlaskClient) -> None:
    body = order_body(surprise="yes")
    del body["payment_method"], body["customer_email"], body["card_details"]
    response = place(client, body)
    assert response.status_code == 201
    assert response.get_json()["payment_method"] == "credit_card"
    assert response.get_json()["customer_email"] is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": "   "}, "customer_id"),
        ({"customer_id": "c" * 101}, "customer_id"),
        ({"customer_id": 7}, "customer_id"),
        ({"items": []}, "items"),
        ({"items": [{"product_id": "p", "quantity": 1, "price": 1}] * 101, "total_amount": 101}, "items"),
        ({"items": [{"product_id": "", "quantity": 1, "price": 1}], "total_amount": 1}, "items.0.product_id"),
        ({"items": [{"product_id": "p" * 101, "quantity": 1, "price": 1}], "total_amount": 1}, "items.0.product_id"),
        ({"items": [{"product_id": "p", "quantity": 1.5, "price": 1}], "total_amount": 1.5}, "items.0.quantity"),
        ({"items": [{"product_id": "p", "quantity": "2", "price": 1}], "total_amount": 2}, "items.0.quantity"),
        ({"items": [{"product_id": "p", "quantity": True, "price": 1}], "total_amount": 1}, "items.0.quantity"),
        ({"items": [{"product_id": "p", "quantity": 0, "price": 1}], "total_amount": 0}, "items.0.quantity"),
        ({"items": [{"product_id": "p", "quantity": 1, "price": 0}], "total_amount": 0}, "items.0.price"),
        ({"items": [{"product_id": "p", "quantity": 1, "price": -2}], "total_amount": -2}, "items.0.price"),
        ({"items": [{"product_id": "p", "quantity": 1, "price": "3"}], "total_amount": 3}, "items.0.price"),
        ({"items": [{"product_id": "p", "quantity": 1}], "total_amount": 3}, "items.0.price"),
        ({"total_amount": 44.97}, "total_amount"),
        ({"total_amount": 100}, "total_amount"),
        ({"total_amount": "44.98"}, "total_amount"),
        ({"customer_email": "not-an-email"}, "customer_email"),
        ({"customer_email": "a@" + "b" * 250 + ".com"}, "customer_email"),
        ({"payment_method": "x" * 51}, "payment_method"),
        ({"card_details": {"number": "4111"}}, "card_details.number"),
        ({"card_details": {"number": "4111a11111111111"}}, "card_details.number"),
        ({"card_details": {"number": "4" * 20}}, "card_details.number"),
        ({"card_details": {}}, "card_details.number"),
    ],
)
def test_rejects_an_invalid_order_naming_the_field(client: FlaskClient, changes: dict[str, Any], field: str) -> None:
    response = place(client, order_body(**changes))
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"
    assert field in error_fields(response)


def test_rejects_a_missing_field(client: FlaskClient) -> None:
    body = order_body()
    del body["customer_id"]
    assert "customer_id" in error_fields(place(client, body))


def test_rejects_an_infinite_price(client: FlaskClient) -> None:
    raw = json.dumps(order_body()).replace("19.99", "Infinity")
    response = client.post("/orders", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert "items.0.price" in error_fields(response)


def test_accepts_a_total_that_matches_to_the_cent(client: FlaskClient) -> None:
    items = [{"product_id": "p", "quantity": 3, "price": 0.1}]
    assert place(client, order_body(items=items, total_amount=0.3)).status_code == 201


def test_accepts_a_card_number_typed_with_spaces(client: FlaskClient, vault: FakeCardVault) -> None:
    response = place(client, order_body(card_details={"number": "4111 1111 1111 1111"}))
    assert response.status_code == 201
    assert vault.cards == {"pm_test1": CARD}


def test_answers_503_with_retry_after_and_creates_nothing_when_the_vault_is_unavailable(
    client: FlaskClient, repo: InMemoryOrderRepository, vault: FakeCardVault
) -> None:
    vault.available = False
    response = place(client, Idempotency_Key="k-vault")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "payment_vault_unavailable"
    assert response.headers["Retry-After"] == "2"
    bulk = client.post("/orders/bulk", json={"orders": [order_body(), order_body(card_details=None)]})
    assert bulk.status_code == 207
    first, second = bulk.get_json()["results"]
    assert (first["status"], first["error"]["code"], second["status"]) == (503, "payment_vault_unavailable", 201)
    assert [event.data["payment_method_token"] for event in repo.events] == [None]
    assert repo.keys == {}


def test_answers_415_for_a_body_that_is_not_json(client: FlaskClient) -> None:
    response = client.post("/orders", data="customer_id=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_answers_400_for_malformed_json(client: FlaskClient) -> None:
    response = client.post("/orders", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_json"


def test_answers_400_for_a_json_body_that_is_not_an_object(client: FlaskClient) -> None:
    assert place(client, [1, 2]).status_code == 400


def test_never_echoes_the_card_number(client: FlaskClient, service: OrderService) -> None:
    created = place(client)
    order_id = created.get_json()["order_id"]
    service.apply(order_id, Transition("failed", now(), failure_reason="cancelled", failure_detail="x"))
    responses = [
        created,
        place(client, Idempotency_Key="k-card"),
        place(client, Idempotency_Key="k-card"),
        client.get(f"/orders/{order_id}"),
        client.get("/orders"),
        client.get("/customers/cust-1/orders"),
        client.post("/orders/bulk", json={"orders": [order_body(), {"customer_id": "x"}]}),
        client.post(f"/orders/{order_id}/cancel"),
    ]
    for response in responses:
        assert CARD not in response.get_data(as_text=True)
    assert (created.get_json()["card_brand"], created.get_json()["card_last4"]) == ("visa", "1111")


def test_replays_the_same_order_for_a_repeated_idempotency_key(
    client: FlaskClient, repo: InMemoryOrderRepository
) -> None:
    first = place(client, Idempotency_Key="key-1")
    again = place(client, Idempotency_Key="key-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() == first.get_json()
    assert len(repo.orders) == 1
    assert [e.event_type for e in repo.events] == ["OrderCreated"]


def test_refuses_an_idempotency_key_reused_with_another_body(
    client: FlaskClient, repo: InMemoryOrderRepository
) -> None:
    place(client, Idempotency_Key="key-2")
    response = place(client, order_body(customer_id="someone-else"), Idempotency_Key="key-2")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "idempotency_conflict"
    assert len(repo.orders) == 1


def test_rejects_an_overlong_idempotency_key(client: FlaskClient) -> None:
    response = place(client, Idempotency_Key="k" * 201)
    assert response.status_code == 400
    assert error_fields(response) == ["Idempotency-Key"]


def test_places_bulk_orders_independently(client: FlaskClient, repo: InMemoryOrderRepository) -> None:
    bad = order_body(total_amount=1)
    response = client.post("/orders/bulk", json={"orders": [order_body(), bad, "nonsense", order_body()]})
    assert response.status_code == 207
    body = response.get_json()
    assert (body["created"], body["failed"]) == (2, 2)
    assert [r["status"] for r in body["results"]] == [201, 400, 400, 201]
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3]
    assert "total_amount" in [d["field"] for d in body["results"][1]["error"]["details"]]
    assert {body["results"][0]["order_id"], body["results"][3]["order_id"]} == set(repo.orders)
    assert len(repo.events) == 2


def test_answers_200_when_every_bulk_order_is_created(client: FlaskClient) -> None:
    response = client.post("/orders/bulk", json={"orders": [order_body()]})
    assert response.status_code == 200
    assert response.get_json()["created"] == 1


@pytest.mark.parametrize(
    "body", [{}, {"orders": []}, {"orders": "x"}, {"orders": [order_body()] * 101}, [order_body()]]
)
def test_rejects_a_malformed_bulk_request(client: FlaskClient, repo: InMemoryOrderRepository, body: Any) -> None:
    assert client.post("/orders/bulk", json=body).status_code == 400
    assert repo.orders == {}


def test_lists_orders_newest_first_page_by_page(client: FlaskClient) -> None:
    placed = {place(client, order_body(customer_id="pager")).get_json()["order_id"] for _ in range(5)}
    place(client, order_body(customer_id="someone-else"))
    seen, cursor = [], None
    for _ in range(3):
        query = {"customer_id": "pager", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/orders", query_string=query).get_json()
        assert len(page["orders"]) <= 2
        seen += [(o["created_at"], o["order_id"]) for o in page["orders"]]
        cursor = page["next_cursor"]
    assert cursor is None
    # Orders placed in the same millisecond are ordered by id, so every page boundary is exact.
    assert seen == sorted(seen, reverse=True)
    assert {order_id for _, order_id in seen} == placed


def test_lists_a_customers_orders_filtered_by_status(client: FlaskClient, service: OrderService) -> None:
    first = place(client, order_body(customer_id="c-9")).get_json()["order_id"]
    place(client, order_body(customer_id="c-9"))
    service.apply(first, Transition("validated", now()))
    page = client.get("/customers/c-9/orders", query_string={"status": "validated"}).get_json()
    assert [o["order_id"] for o in page["orders"]] == [first]
    assert page["next_cursor"] is None
    assert len(client.get("/customers/c-9/orders").get_json()["orders"]) == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "shipped"}, "status"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"cursor": "WzEsMl0"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"customer_id": "c" * 101}, "customer_id"),
    ],
)
def test_rejects_invalid_list_parameters(client: FlaskClient, query: dict[str, Any], field: str) -> None:
    response = client.get("/orders", query_string=query)
    assert response.status_code == 400
    assert error_fields(response) == [field]


def test_accepts_a_cancel_once_and_writes_one_event(client: FlaskClient, repo: InMemoryOrderRepository) -> None:
    order_id = place(client).get_json()["order_id"]
    first = client.post(f"/orders/{order_id}/cancel")
    again = client.post(f"/orders/{order_id}/cancel")
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.get_json() == {"order_id": order_id, "status": "pending", "cancel_requested": True}
    cancels = [e for e in repo.events if e.event_type == "OrderCancelRequested"]
    assert len(cancels) == 1
    assert cancels[0].data == {"reason": "cancelled"}
    assert client.get(f"/orders/{order_id}").get_json()["cancel_requested"] is True


def test_refuses_to_cancel_a_finished_order(client: FlaskClient, service: OrderService) -> None:
    order_id = place(client).get_json()["order_id"]
    service.apply(order_id, Transition("completed", now()))
    response = client.post(f"/orders/{order_id}/cancel")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "order_terminal"


def test_answers_404_when_cancelling_an_unknown_order(client: FlaskClient) -> None:
    assert client.post("/orders/nope/cancel").status_code == 404


def test_a_database_outage_part_way_through_a_bulk_request_says_which_orders_exist(client, repo, monkeypatch):
    from pymongo.errors import ServerSelectionTimeoutError

    real_add = repo.add
    calls = {"n": 0}

    def add_then_fail(order, events):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise ServerSelectionTimeoutError("database unreachable")
        real_add(order, events)

    monkeypatch.setattr(repo, "add", add_then_fail)
    response = client.post("/orders/bulk", json={"orders": [order_body(), order_body(), order_body()]})
    assert response.status_code == 207
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [201, 503, 503]
    assert results[1]["error"]["code"] == "database_unavailable"
    assert len(repo.events) == 1  # only the created order's OrderCreated


def test_a_bulk_request_with_the_database_down_answers_503(client, repo, monkeypatch):
    from pymongo.errors import ServerSelectionTimeoutError

    def down(order, events):
        raise ServerSelectionTimeoutError("database unreachable")

    monkeypatch.setattr(repo, "add", down)
    response = client.post("/orders/bulk", json={"orders": [order_body(), order_body()]})
    assert response.status_code == 503
    assert response.get_json()["created"] == 0
