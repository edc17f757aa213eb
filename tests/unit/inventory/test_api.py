"""The HTTP API over the in-memory service."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.unit.inventory.fakes import InMemoryStockRepository
from tests.unit.inventory.helpers import levels


def reserve(client: FlaskClient, *items: dict[str, Any], order_id: str = "o1") -> Any:
    return client.post("/reservations", json={"order_id": order_id, "items": list(items)})


def test_inventory_lists_every_product_sorted_with_its_levels(client: FlaskClient) -> None:
    products = client.get("/inventory").get_json()["products"]
    assert [p["product_id"] for p in products] == sorted(p["product_id"] for p in products)
    laptop = next(p for p in products if p["product_id"] == "laptop")
    assert laptop == {
        "product_id": "laptop",
        "name": "Laptop",
        "price": 999.99,
        "available": 50,
        "reserved": 0,
        "sold": 0,
    }


def test_one_product_is_returned_and_an_unknown_one_is_404(client: FlaskClient) -> None:
    assert client.get("/inventory/mouse").get_json()["available"] == 1000
    response = client.get("/inventory/unicorn")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_put_creates_then_restocks_a_product(client: FlaskClient) -> None:
    created = client.put("/inventory/webcam", json={"name": "Webcam", "price": 49.99, "quantity": 5})
    assert created.status_code == 201
    assert created.get_json()["available"] == 5
    restocked = client.put("/inventory/webcam", json={"quantity": 3, "price": 45})
    assert restocked.status_code == 200
    assert (restocked.get_json()["available"], restocked.get_json()["price"]) == (8, 45.0)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/inventory/webcam", {"name": "Webcam", "price": 49.99}),
        ("/inventory/webcam", {"name": "Webcam", "price": 0, "quantity": 1}),
        ("/inventory/webcam", {"name": "Webcam", "price": 1, "quantity": -1}),
        ("/inventory/webcam", {"name": "Webcam", "price": 1, "quantity": 1.5}),
        ("/inventory/webcam", {"name": "Webcam", "price": True, "quantity": 1}),
        ("/inventory/webcam", {"name": "", "price": 1, "quantity": 1}),
        ("/inventory/webcam", {"name": "x" * 201, "price": 1, "quantity": 1}),
        ("/inventory/mouse", {}),
        ("/inventory/mouse", {"quantity": "10"}),
        ("/inventory/" + "p" * 101, {"name": "Long", "price": 1, "quantity": 1}),
        ("/inventory/$bad", {"name": "Bad", "price": 1, "quantity": 1}),
    ],
)
def test_put_with_bad_input_is_a_400(client: FlaskClient, path: str, body: dict[str, Any]) -> None:
    response = client.put(path, json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"


def test_put_without_json_is_a_415(client: FlaskClient) -> None:
    assert client.put("/inventory/mouse", data="quantity=1").status_code == 415


def test_a_reservation_is_created_read_and_released(client: FlaskClient, stock: InMemoryStockRepository) -> None:
    created = reserve(client, {"product_id": "mouse", "quantity": 2, "price": 29.99})
    assert created.status_code == 201
    body = created.get_json()
    assert (body["status"], body["order_id"], body["items"]) == (
        "reserved",
        "o1",
        [{"product_id": "mouse", "quantity": 2}],
    )
    assert body["expires_at"].endswith("Z")
    assert levels(stock, "mouse") == (998, 2, 0)
    rid = body["reservation_id"]
    assert client.get(f"/reservations/{rid}").get_json()["status"] == "reserved"
    released = client.delete(f"/reservations/{rid}")
    assert released.get_json() == {"reservation_id": rid, "status": "released", "released": True}
    again = client.delete(f"/reservations/{rid}")
    assert (again.status_code, again.get_json()["released"]) == (200, False)
    assert levels(stock, "mouse") == (1000, 0, 0)


def test_each_rest_reservation_gets_a_fresh_id(client: FlaskClient) -> None:
    first = reserve(client, {"product_id": "mouse", "quantity": 1}).get_json()["reservation_id"]
    second = reserve(client, {"product_id": "mouse", "quantity": 1}).get_json()["reservation_id"]
    assert first != second


def test_too_little_stock_is_a_409_that_says_so(client: FlaskClient, stock: InMemoryStockRepository) -> None:
    response = reserve(client, {"product_id": "mouse", "quantity": 1}, {"product_id": "rare_item", "quantity": 6})
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "insufficient_stock"
    assert "stock" in error["message"] and "rare_item" in error["message"]
    assert error["details"] == [{"product_id": "rare_item", "requested": 6, "available": 5}]
    assert levels(stock, "mouse") == (1000, 0, 0)


def test_an_unknown_product_is_a_400_naming_it(client: FlaskClient) -> None:
    response = reserve(client, {"product_id": "unicorn", "quantity": 1})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "unknown_product"
    assert "unicorn" in error["message"]


def test_a_wrong_price_is_a_400(client: FlaskClient) -> None:
    response = reserve(client, {"product_id": "mouse", "quantity": 1, "price": 1.0})
    assert (response.status_code, response.get_json()["error"]["code"]) == (400, "price_mismatch")


@pytest.mark.parametrize(
    "body",
    [
        {"items": [{"product_id": "mouse", "quantity": 1}]},
        {"order_id": "o1", "items": []},
        {"order_id": "o1", "items": [{"product_id": "mouse", "quantity": 0}]},
        {"order_id": "o1", "items": [{"product_id": "mouse", "quantity": "1"}]},
        {"order_id": "x" * 101, "items": [{"product_id": "mouse", "quantity": 1}]},
        {"order_id": "o1", "items": [{"product_id": "mouse", "quantity": 1}] * 101},
    ],
)
def test_a_malformed_reservation_request_is_a_400(client: FlaskClient, body: dict[str, Any]) -> None:
    response = client.post("/reservations", json=body)
    assert (response.status_code, response.get_json()["error"]["code"]) == (400, "validation_error")


def test_unknown_reservations_are_404(client: FlaskClient) -> None:
    assert client.get("/reservations/nope").status_code == 404
    response = client.delete("/reservations/nope")
    assert (response.status_code, response.get_json()["error"]["code"]) == (404, "not_found")


def test_health_and_metrics_are_served(client: FlaskClient) -> None:
    reserve(client, {"product_id": "mouse", "quantity": 1})
    assert client.get("/health").get_json()["service"] == "inventory"
    assert b"inventory_reservations_total" in client.get("/metrics").data
