"""A restart of any service loses nothing: orders, payments, stock, sagas, notifications."""

from __future__ import annotations

from shared.config import SERVICE_NAMES
from tests.e2e.conftest import order_body, stock, wait_until


def snapshot(stack, order_id: str, customer_id: str) -> dict:
    def get(service: str, path: str, **params: str) -> dict:
        return stack.http.get(stack.url(service, path), params=params, timeout=5).json()

    order = get("order", f"/orders/{order_id}")
    payments = get("payment", "/payments", order_id=order_id)["payments"]
    notifications = get("notification", "/notifications", customer_id=customer_id)["notifications"]
    return {
        "order": (order["status"], order["payment_id"]),
        "payments": [(p["payment_id"], p["status"]) for p in payments],
        "stock": {k: stock(stack, "monitor")[k] for k in ("available", "reserved", "sold")},
        "saga": get("orchestrator", f"/flows/{order_id}")["state"],
        "notifications": [n["notification_id"] for n in notifications],
        "timeline": len(get("monitoring", f"/orders/{order_id}/events").get("events", [])),
    }


def test_restarting_every_service_keeps_all_state(stack, place, terminal):
    body = order_body([("monitor", 1, 299.99)])
    order_id = place(body)["order_id"]
    assert terminal(order_id)["status"] == "completed"
    before = wait_until(
        # All 11 events of a completed order, and the stock commit done: nothing left in flight.
        lambda: (
            (s := snapshot(stack, order_id, body["customer_id"]))["notifications"]
            and s["timeline"] >= 11
            and s["stock"]["reserved"] == 0
            and s
        ),
        what="the order's last events",
    )

    for service in SERVICE_NAMES:
        stack.restart(service)

    assert snapshot(stack, order_id, body["customer_id"]) == before
    # And the restarted system still takes orders.
    second = place(order_body([("monitor", 1, 299.99)]))
    assert terminal(second["order_id"])["status"] == "completed"
