"""The seed-002 scenarios through the running stack: happy path, stock, payment, cancel, idempotency."""

from __future__ import annotations

import concurrent.futures
import uuid

from tests.e2e.conftest import new_customer, order_body, stock, wait_until


def payments_for(stack, order_id):
    response = stack.http.get(stack.url("payment", "/payments"), params={"order_id": order_id}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["payments"]


def notifications_for(stack, customer_id):
    response = stack.http.get(
        stack.url("notification", "/notifications"), params={"customer_id": customer_id}, timeout=5
    )
    assert response.status_code == 200, response.text
    return response.json()["notifications"]


def test_the_readme_happy_path_completes_with_one_charge_and_one_notification(stack, place, terminal):
    before = stock(stack, "laptop")
    body = {
        "customer_id": new_customer(),
        "items": [{"product_id": "laptop", "quantity": 1, "price": 999.99}],
        "total_amount": 999.99,
        "customer_email": "test@example.com",
    }
    created = place(body)
    assert created["status"] == "pending"

    order = terminal(created["order_id"])
    assert order["status"] == "completed", order
    assert order["payment_id"]
    after = wait_until(lambda: (s := stock(stack, "laptop"))["reserved"] == before["reserved"] and s, what="commit")
    assert after["available"] == before["available"] - 1
    assert after["sold"] == before["sold"] + 1
    payments = payments_for(stack, created["order_id"])
    assert [p["status"] for p in payments] == ["completed"]
    notes = wait_until(lambda: notifications_for(stack, body["customer_id"]), what="the confirmation")
    assert [n["type"] for n in notes] == ["order_confirmation"]
    flow = stack.http.get(stack.url("orchestrator", f"/flows/{created['order_id']}"), timeout=5).json()
    assert flow["state"] == "completed"
    events = stack.http.get(stack.url("orchestrator", f"/orders/{created['order_id']}/events"), timeout=5)
    assert events.status_code == 200, events.text
    steps = [(e["step"], e["status"]) for e in events.json()["events"]]
    assert steps[0] == ("validate_order", "completed") and ("take_payment", "completed") in steps, steps


def test_insufficient_stock_fails_the_order_and_moves_no_stock(stack, place, terminal):
    before = {p: stock(stack, p) for p in ("laptop", "rare_item", "mouse")}
    orders = [
        place(order_body([("laptop", 1000, 999.99)])),
        place(order_body([("rare_item", 1000, 99.99)])),
        place(order_body([("mouse", 1, 29.99), ("rare_item", 1000, 99.99)])),  # mixed: one line can't be met
    ]
    for created in orders:
        order = terminal(created["order_id"])
        assert order["status"] == "failed"
        assert order["failure_reason"] == "out_of_stock"
    for product, was in before.items():
        now = stock(stack, product)
        assert (now["available"], now["reserved"]) == (was["available"], was["reserved"]), product


def test_a_declined_card_fails_the_order_and_releases_the_stock_exactly_once(stack, place, terminal):
    before = stock(stack, "keyboard")
    body = order_body([("keyboard", 2, 89.99)], card_details={"number": "4000000000000002"})
    created = place(body)
    order = terminal(created["order_id"])
    assert order["status"] == "failed"
    assert order["failure_reason"] == "payment_declined"
    after = stock(stack, "keyboard")
    assert (after["available"], after["reserved"], after["sold"]) == (
        before["available"],
        before["reserved"],
        before["sold"],
    )
    assert [p["status"] for p in payments_for(stack, created["order_id"])] == ["failed"]

    def timeline():  # monitoring follows the topics on its own, a little behind the order
        body = stack.http.get(stack.url("monitoring", f"/orders/{created['order_id']}/events"), timeout=5).json()
        types = [e["event_type"] for e in body.get("events", [])]
        return types if {"InventoryReleased", "OrderFailed"} <= set(types) else None

    types = wait_until(timeline, what="the release and the failure in the timeline")
    assert types.count("InventoryReleased") == 1


def test_invalid_bodies_get_a_json_4xx_naming_the_problem(stack):
    url = stack.url("order", "/orders")

    def body(quantity, price, total, customer_id="c"):
        line = {"product_id": "laptop", "quantity": quantity, "price": price}
        return {"customer_id": customer_id, "items": [line], "total_amount": total}

    no_customer = body(1, 10, 10)
    del no_customer["customer_id"]
    cases = [
        ({"customer_id": "c", "items": [], "total_amount": 0}, "items"),
        (body(1.5, 1, 1.5), "quantity"),
        (body(1, -1, -1), "price"),
        (body(2, 10, 25), "total_amount"),
        (no_customer, "customer_id"),
    ]
    for body, field in cases:
        response = stack.http.post(url, json=body, timeout=5)
        assert response.status_code == 400, (body, response.text)
        assert field in response.text, (field, response.text)
        assert response.json()["error"]["code"] == "validation_error"
    not_json = stack.http.post(url, data="customer_id=c", headers={"Content-Type": "text/plain"}, timeout=5)
    assert not_json.status_code == 415 and "error" in not_json.json()
    broken = stack.http.post(url, data="{broken", headers={"Content-Type": "application/json"}, timeout=5)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    assert stack.http.get(stack.url("order", "/orders/no-such-order"), timeout=5).status_code == 404
    assert stack.http.delete(stack.url("order", "/orders"), timeout=5).status_code == 405
    payment = stack.http.post(
        stack.url("payment", "/payments"),
        json={"order_id": "test_order", "amount": -100.00, "payment_method": "credit_card"},
        timeout=5,
    )
    assert payment.status_code == 400 and "amount" in payment.text


def test_the_seed_payment_failure_demo_answers_402(stack):
    body = {
        "order_id": "test_order",
        "amount": 999999.99,
        "payment_method": "credit_card",
        "card_details": {"number": "4000000000000002"},
    }
    for _ in range(2):
        response = stack.http.post(stack.url("payment", "/payments"), json=body, timeout=5)
        assert response.status_code == 402, response.text
        assert response.json()["status"] == "failed"


def test_bulk_orders_report_each_result(stack, terminal):
    good = order_body([("usb_cable", 1, 9.99)])
    bad = order_body([("usb_cable", 1, 9.99)])
    bad["total_amount"] = 1.0
    response = stack.http.post(stack.url("order", "/orders/bulk"), json={"orders": [good, bad, good]}, timeout=10)
    assert response.status_code in (200, 207), response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 201]
    for result in (results[0], results[2]):
        assert terminal(result["order_id"])["status"] == "completed"


def test_a_cancelled_order_fails_with_reason_cancelled_and_releases_its_stock(stack, place, terminal):
    product = f"slow-{uuid.uuid4().hex[:8]}"
    created = stack.http.put(
        stack.url("inventory", f"/inventory/{product}"),
        json={"name": "Cancel me", "price": 5.0, "quantity": 3},
        timeout=5,
    )
    assert created.status_code == 201, created.text
    order = place(order_body([(product, 1, 5.0)]))
    cancel = stack.http.post(stack.url("order", f"/orders/{order['order_id']}/cancel"), timeout=5)
    if cancel.status_code == 409:
        # The saga was quicker than the cancel: a completed order can't be cancelled.
        assert terminal(order["order_id"])["status"] == "completed"
        return
    assert cancel.status_code == 202, cancel.text
    final = terminal(order["order_id"])
    assert final["status"] == "failed"
    assert final["failure_reason"] == "cancelled"
    after = wait_until(lambda: (s := stock(stack, product))["reserved"] == 0 and s, what="release")
    assert after["available"] == 3
    refunded = [p for p in payments_for(stack, order["order_id"]) if p["status"] == "completed"]
    assert not refunded, "a cancelled order keeps no charge"
    again = stack.http.post(stack.url("order", f"/orders/{order['order_id']}/cancel"), timeout=5)
    assert again.status_code == 409


def test_the_same_idempotency_key_gives_the_same_order(stack, place):
    key = f"key-{uuid.uuid4()}"
    body = order_body([("mouse", 1, 29.99)])
    first = place(body, headers={"Idempotency-Key": key})
    second = stack.http.post(stack.url("order", "/orders"), json=body, headers={"Idempotency-Key": key}, timeout=5)
    assert second.status_code == 200
    assert second.json()["order_id"] == first["order_id"]
    other = dict(body, customer_id=new_customer())
    conflict = stack.http.post(stack.url("order", "/orders"), json=other, headers={"Idempotency-Key": key}, timeout=5)
    assert conflict.status_code == 409
    listed = stack.http.get(stack.url("order", f"/customers/{body['customer_id']}/orders"), timeout=5).json()
    assert [o["order_id"] for o in listed["orders"]] == [first["order_id"]]


def test_the_timeline_lists_each_step_once_in_time_order(stack, place, terminal):
    created = place(order_body([("monitor", 1, 299.99)]))
    terminal(created["order_id"])

    def timeline():
        body = stack.http.get(stack.url("monitoring", f"/orders/{created['order_id']}/events"), timeout=5).json()
        types = [e["event_type"] for e in body.get("events", [])]
        return body if "OrderCompleted" in types and "NotificationSent" in types else None

    events = wait_until(timeline, what="the full timeline")["events"]
    types = [e["event_type"] for e in events]
    assert types[0] == "OrderCreated"
    for step in ("OrderValidated", "ReserveInventory", "InventoryReserved", "PaymentRequested", "PaymentCompleted"):
        assert types.count(step) == 1, types
    assert types.index("InventoryReserved") < types.index("PaymentRequested") < types.index("OrderCompleted")
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    assert stack.http.get(stack.url("monitoring", "/orders/nope/events"), timeout=5).status_code == 404


def test_prometheus_counters_move_when_orders_complete(stack, place, terminal):
    def completed_total() -> float:
        text = stack.http.get(stack.url("monitoring", "/metrics/prometheus"), timeout=5).text
        for line in text.splitlines():
            if line.startswith("ecommerce_orders_completed_total"):
                return float(line.split()[-1])
        return 0.0

    before = completed_total()
    terminal(place(order_body([("headphones", 1, 199.99)]))["order_id"])
    wait_until(lambda: completed_total() >= before + 1, what="the completed counter")
    for service in ("order", "payment", "inventory", "notification", "orchestrator", "monitoring"):
        metrics = stack.http.get(stack.url(service, "/metrics"), timeout=5)
        assert metrics.status_code == 200 and "http_requests_total" in metrics.text


def test_ten_concurrent_orders_for_the_last_five_units_complete_exactly_five(stack, place, terminal):
    product = f"last5-{uuid.uuid4().hex[:8]}"
    response = stack.http.put(
        stack.url("inventory", f"/inventory/{product}"),
        json={"name": "Scarce", "price": 10.0, "quantity": 5},
        timeout=5,
    )
    assert response.status_code == 201, response.text
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        created = list(pool.map(lambda _: place(order_body([(product, 1, 10.0)])), range(10)))
    finals = [terminal(c["order_id"]) for c in created]
    assert sorted(f["status"] for f in finals).count("completed") == 5
    assert {f["failure_reason"] for f in finals if f["status"] == "failed"} == {"out_of_stock"}
    final = wait_until(lambda: (s := stock(stack, product))["reserved"] == 0 and s, what="commits")
    assert (final["available"], final["sold"]) == (0, 5)


def test_every_service_reports_health_and_dependencies(stack):
    for service in ("order", "payment", "inventory", "notification", "orchestrator", "monitoring"):
        health = stack.http.get(stack.url(service, "/health"), timeout=5).json()
        assert health["status"] == "healthy" and health["service"] == service
        detailed = stack.http.get(stack.url(service, "/health/detailed"), timeout=5)
        assert detailed.status_code == 200
        deps = detailed.json()["dependencies"]
        assert deps["kafka"]["status"] == "up" and deps["mongo"]["status"] == "up"
        assert "latency_ms" in deps["mongo"]
