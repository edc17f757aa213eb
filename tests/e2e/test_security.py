"""Credentials on the running stack: customers with tokens, keys with scopes, every route guarded."""

from __future__ import annotations

import importlib
import time
from datetime import UTC, datetime

import requests

from shared.apikeys import MongoKeyStore, new_key
from shared.auth import SCOPES
from shared.config import SERVICE_NAMES
from shared.mongo import make_mongo_client
from shared.web import create_service_app
from tests.e2e.conftest import new_customer, order_body, wait_until

OPEN = {"/health", "/", "/dashboard", "/dashboard.js", "/dashboard.css", "/openapi.json", "/docs", "/docs/<name>"}


def route_table(settings) -> list[tuple[str, str, str]]:
    """(service, method, path) of every route each service serves, from its own URL map."""
    table = []
    for name in SERVICE_NAMES:
        app = create_service_app(settings, name, {})
        app.register_blueprint(importlib.import_module(f"services.{name}.api").bp)
        for rule in app.url_map.iter_rules():
            if rule.endpoint == "static" or rule.rule in OPEN:
                continue
            path = rule.build({arg: "x" for arg in rule.arguments}, append_unknown=False)[1]
            table += [(name, method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return table


def test_anonymous_callers_get_401_on_every_route_of_every_service(stack):
    table = route_table(stack.settings)
    assert len(table) >= 40
    for service, method, path in table:
        response = requests.request(method, stack.url(service, path), json={}, timeout=5)
        assert response.status_code == 401, (service, method, path, response.status_code)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "unauthorized"
    for path in OPEN & {"/health"}:
        assert requests.get(stack.url("order", path), timeout=5).status_code == 200


def test_a_customer_places_follows_and_cancels_their_own_orders_with_a_token(stack, terminal):
    alice = new_customer()
    as_alice = stack.as_customer(alice)
    body = order_body([("usb_cable", 1, 9.99)])
    body["customer_id"] = alice
    placed = as_alice.post(stack.url("order", "/orders"), json=body, timeout=10)
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order_id"]
    assert terminal(order_id)["status"] == "completed"
    assert as_alice.get(stack.url("order", f"/orders/{order_id}"), timeout=5).json()["status"] == "completed"
    mine = as_alice.get(stack.url("order", "/orders"), timeout=5).json()["orders"]
    assert [o["order_id"] for o in mine] == [order_id]

    declined = {**body, "card_details": {"number": "4000000000000002"}}
    failed = as_alice.post(stack.url("order", "/orders"), json=declined, timeout=10).json()
    assert terminal(failed["order_id"])["failure_reason"] == "payment_declined"

    to_cancel = as_alice.post(stack.url("order", "/orders"), json=body, timeout=10).json()
    cancel = as_alice.post(stack.url("order", f"/orders/{to_cancel['order_id']}/cancel"), timeout=5)
    assert cancel.status_code in (202, 409), cancel.text
    assert terminal(to_cancel["order_id"])["status"] in ("failed", "completed")


def test_customers_cannot_see_list_cancel_or_place_each_others_orders(stack):
    alice, bob = new_customer(), new_customer()
    body = {**order_body([("usb_cable", 1, 9.99)]), "customer_id": alice}
    order_id = stack.as_customer(alice).post(stack.url("order", "/orders"), json=body, timeout=10).json()["order_id"]
    as_bob = stack.as_customer(bob)
    assert as_bob.get(stack.url("order", f"/orders/{order_id}"), timeout=5).status_code == 404
    assert as_bob.post(stack.url("order", f"/orders/{order_id}/cancel"), timeout=5).status_code == 404
    assert as_bob.get(stack.url("order", f"/customers/{alice}/orders"), timeout=5).status_code == 404
    assert as_bob.get(stack.url("order", "/orders"), params={"customer_id": alice}, timeout=5).status_code == 404
    assert as_bob.get(stack.url("order", "/orders"), timeout=5).json()["orders"] == []
    assert as_bob.post(stack.url("order", "/orders"), json=body, timeout=10).status_code == 403
    # Nor reach anything but orders and the catalogue.
    assert as_bob.get(stack.url("payment", "/payments"), timeout=5).status_code == 403
    assert as_bob.get(stack.url("monitoring", "/status"), timeout=5).status_code == 403


def test_an_operator_key_reads_but_cannot_refund_or_restock(stack):
    operator = stack.with_key("OPERATOR_KEY")
    assert operator.get(stack.url("monitoring", "/status"), timeout=5).status_code == 200
    assert operator.get(stack.url("payment", "/payments"), params={"order_id": "x"}, timeout=5).status_code == 200
    refund = operator.post(stack.url("payment", "/payments/pay_x/refund"), timeout=5)
    assert refund.status_code == 403 and refund.json()["error"]["code"] == "insufficient_scope"
    assert (
        operator.put(stack.url("inventory", "/inventory/usb_cable"), json={"price": 0.01}, timeout=5).status_code == 403
    )
    metrics = stack.with_key("METRICS_KEY")
    assert metrics.get(stack.url("order", "/metrics"), timeout=5).status_code == 200
    assert metrics.get(stack.url("order", "/health/detailed"), timeout=5).status_code == 403


def test_a_revoked_key_is_refused_within_the_cache_time(stack):
    client = make_mongo_client(stack.settings.mongo)
    try:
        store = MongoKeyStore(client[stack.settings.auth.database]["api_keys"])
        whole, stored = new_key("short-lived", ["inventory:read"], SCOPES)
        store.add(stored)
        headers = {"X-API-Key": whole}
        url = stack.url("inventory", "/inventory")
        assert requests.get(url, headers=headers, timeout=5).status_code == 200
        store.revoke(stored.key_id, datetime.now(UTC))
        revoked_at = time.monotonic()
        wait_until(
            lambda: requests.get(url, headers=headers, timeout=5).status_code == 401,
            timeout=stack.settings.auth.key_cache_s + 5,
            what="the revoked key to be refused",
        )
        assert time.monotonic() - revoked_at <= stack.settings.auth.key_cache_s + 2
    finally:
        client.close()


def test_form_posts_and_cookie_only_requests_are_refused(stack):
    url = stack.url("order", "/orders")
    form = stack.http.post(url, data={"customer_id": "c"}, timeout=5)
    assert form.status_code == 415 and form.json()["error"]["code"] == "unsupported_media_type"
    # What a page on another site could make a browser send: a cookie, no header. Credentials come
    # from headers only, so it is anonymous.
    key = stack.credentials.keys["ADMIN_KEY"]
    cross_site = requests.post(
        stack.url("monitoring", "/dlq/x/replay"),
        cookies={"session": key, "Authorization": f"Bearer {key}"},
        headers={"Origin": "https://evil.example"},
        timeout=5,
    )
    assert cross_site.status_code == 401


def test_health_details_need_a_scope_and_never_show_exception_text(stack):
    assert requests.get(stack.url("order", "/health/detailed"), timeout=5).status_code == 401
    detailed = stack.with_key("OPERATOR_KEY").get(stack.url("order", "/health/detailed"), timeout=5).json()
    for dependency in detailed["dependencies"].values():
        assert set(dependency) <= {"status", "latency_ms", "error"}
        assert " " not in dependency.get("error", "")  # a kind, not a message
    # Monitoring polls every service with its own key, so every tile is up.
    wait_until(
        lambda: all(
            s["status"] == "up"
            for s in stack.with_key("OPERATOR_KEY")
            .get(stack.url("monitoring", "/status"), timeout=5)
            .json()["services"]
            .values()
        ),
        timeout=30,
        what="monitoring to see every service up",
    )


def test_a_flood_from_one_customer_gets_429_while_another_is_served(stack):
    alice, bob = new_customer(), new_customer()
    as_alice, as_bob = stack.as_customer(alice), stack.as_customer(bob)
    url = stack.url("order", "/orders")
    body = {**order_body([("usb_cable", 1, 9.99)]), "customer_id": alice}
    # Limits count in fixed windows of a minute: start the flood early in one.
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)
    answers = [as_alice.post(url, json=body, timeout=10) for _ in range(35)]
    statuses = [a.status_code for a in answers]
    assert statuses.count(201) == 30 and statuses.count(429) == 5, statuses
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    served = as_bob.post(url, json={**body, "customer_id": bob}, timeout=10)
    assert served.status_code == 201, served.text


def test_writes_are_audited_and_an_admin_reads_the_trail_of_every_service(stack):
    carol = new_customer()
    body = {**order_body([("usb_cable", 1, 9.99)]), "customer_id": carol}
    placed = stack.as_customer(carol).post(
        stack.url("order", "/orders"), json=body, headers={"X-Request-ID": f"audit-{carol}"}, timeout=10
    )
    assert placed.status_code == 201 and placed.headers["X-Request-ID"] == f"audit-{carol}"
    refused = stack.with_key("OPERATOR_KEY").post(stack.url("payment", "/payments/pay_x/refund"), timeout=5)
    assert refused.status_code == 403
    assert stack.with_key("OPERATOR_KEY").get(stack.url("monitoring", "/audit"), timeout=5).status_code == 403

    def entries(**params):
        response = stack.http.get(stack.url("monitoring", "/audit"), params={"limit": 500, **params}, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()["entries"]

    mine = wait_until(lambda: entries(principal_id=carol), timeout=10, what="the order's audit entry")
    assert mine[0]["action"] == "POST /orders" and mine[0]["outcome"] == 201
    assert mine[0]["correlation_id"] == f"audit-{carol}" and mine[0]["scope"] == "orders:write"
    refusals = [e for e in entries(service="payment") if e["action"] == "POST /payments/<payment_id>/refund"]
    assert refusals and refusals[0]["outcome"] == 403 and refusals[0]["principal"]["kind"] == "key"
