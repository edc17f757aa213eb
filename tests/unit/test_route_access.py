"""Every route of all six services, taken from each app's URL map, checked with credentials on:
anonymous callers get 401, a key without the route's scope 403, an admin gets through. A route
added without an access rule fails here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from flask import Flask
from werkzeug.routing import Rule

from services.inventory.app import bootstrap as inventory_bootstrap
from services.inventory.app import create_app as inventory_app
from services.notification.app import bootstrap as notification_bootstrap
from services.notification.app import create_app as notification_app
from services.orchestrator.app import bootstrap as orchestrator_bootstrap
from services.orchestrator.app import create_app as orchestrator_app
from services.order.app import bootstrap as order_bootstrap
from services.order.app import create_app as order_app
from services.payment.app import bootstrap as payment_bootstrap
from services.payment.app import create_app as payment_app
from shared.apikeys import InMemoryKeyStore, KeyCache, new_key
from shared.auth import PUBLIC, SCOPES, Authenticator, rule_of
from shared.config import Settings
from tests.unit.inventory.fakes import InMemoryReservationRepository, InMemoryStockRepository
from tests.unit.monitoring.conftest import build_world
from tests.unit.notification.fakes import InMemoryNotificationRepository, RecordingSender
from tests.unit.orchestrator.fakes import FakeClock, InMemorySagaRepository
from tests.unit.order.fakes import FakeCardVault, InMemoryOrderRepository
from tests.unit.payment.fakes import InMemoryPaymentRepository, InMemoryStoredCardRepository

SECRET = "route-access-" + "x" * 40
# Only liveness, the dashboard's static files (a sign-in form until a key is given) and the API's
# description (its OpenAPI document and Swagger UI) are open.
OPEN = {
    "/health",
    "/openapi.json",
    "/docs",
    "/docs/<name>",
    "/",
    "/dashboard",
    "/dashboard.js",
    "/dashboard.css",
}


def settings_for(make_settings: Callable[..., Settings], service: str) -> Settings:
    return make_settings(service, auth={"mode": "on", "jwt_secret": SECRET})


def build_apps(make_settings: Callable[..., Settings]) -> dict[str, Flask]:
    s = {name: settings_for(make_settings, name) for name in ("order", "payment", "inventory", "notification")}
    s["orchestrator"] = settings_for(make_settings, "orchestrator")
    s["monitoring"] = make_settings("monitoring", kafka={"topic_prefix": ""}, auth={"mode": "on", "jwt_secret": SECRET})
    clock = FakeClock()
    return {
        "order": order_app(
            s["order"], service=order_bootstrap(s["order"], orders=InMemoryOrderRepository(), vault=FakeCardVault())
        ),
        "payment": payment_app(
            s["payment"],
            service=payment_bootstrap(
                s["payment"], payments=InMemoryPaymentRepository(), cards=InMemoryStoredCardRepository()
            ),
        ),
        "inventory": inventory_app(
            s["inventory"],
            service=inventory_bootstrap(
                s["inventory"], stock=InMemoryStockRepository(), reservations=InMemoryReservationRepository()
            ),
        ),
        "notification": notification_app(
            s["notification"],
            service=notification_bootstrap(
                s["notification"], notifications=InMemoryNotificationRepository(), sender=RecordingSender()
            ),
        ),
        "orchestrator": orchestrator_app(
            s["orchestrator"],
            service=orchestrator_bootstrap(s["orchestrator"], sagas=InMemorySagaRepository(), clock=clock),
        ),
        "monitoring": _monitoring_app(s["monitoring"]),
    }


def _monitoring_app(settings: Settings) -> Flask:
    from services.monitoring.app import create_app
    from tests.unit.monitoring.fakes import FakeClock as MonitoringClock

    world = build_world(settings, MonitoringClock())
    return create_app(settings, service=world.service)


def routes(app: Flask) -> list[tuple[Rule, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        found += [(rule, method) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def url(rule: Rule) -> str:
    return rule.build({name: "x" for name in rule.arguments}, append_unknown=False)[1]


@pytest.fixture(scope="module")
def keys() -> tuple[InMemoryKeyStore, dict[str, str]]:
    store = InMemoryKeyStore()
    made = {}
    for name, scopes in {"admin": ["admin"], "nothing-useful": ["notifications:read"]}.items():
        whole, stored = new_key(name, scopes, SCOPES)
        store.add(stored)
        made[name] = whole
    return store, made


@pytest.fixture
def apps(make_settings: Callable[..., Settings], keys: tuple[InMemoryKeyStore, dict[str, str]]) -> dict[str, Flask]:
    built = build_apps(make_settings)
    for app in built.values():
        settings = app.extensions["settings"]
        app.extensions["authenticator"] = Authenticator(settings.auth, KeyCache(keys[0], 5))
    return built


def test_every_route_declares_an_access_rule(apps: dict[str, Flask]) -> None:
    for service, app in apps.items():
        for rule, _method in routes(app):
            declared = rule_of(app.view_functions[rule.endpoint])
            assert declared is not None, f"{service} {rule.rule} has no access rule"
            assert (declared is PUBLIC) == (rule.rule in OPEN), f"{service} {rule.rule}: open routes are {OPEN}"


def test_anonymous_callers_get_401_on_every_route_but_the_open_ones(apps: dict[str, Flask]) -> None:
    checked = 0
    for service, app in apps.items():
        client = app.test_client()
        for rule, method in routes(app):
            if rule.rule in OPEN:
                continue
            response = client.open(url(rule), method=method, json={})
            assert response.status_code == 401, f"{service} {method} {rule.rule}: {response.status_code}"
            assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")
            assert response.get_json()["error"]["code"] == "unauthorized"
            checked += 1
    assert checked >= 40


def test_a_key_without_the_scope_gets_403_and_an_admin_gets_through(
    apps: dict[str, Flask], keys: tuple[InMemoryKeyStore, dict[str, str]]
) -> None:
    weak = {"Authorization": f"Bearer {keys[1]['nothing-useful']}"}
    admin = {"Authorization": f"Bearer {keys[1]['admin']}"}
    for service, app in apps.items():
        client = app.test_client()
        for rule, method in routes(app):
            if rule.rule in OPEN:
                continue
            needed = rule_of(app.view_functions[rule.endpoint])
            if "notifications:read" not in needed:
                refused = client.open(url(rule), method=method, json={}, headers=weak)
                assert refused.status_code == 403, f"{service} {method} {rule.rule}"
            answered = client.open(url(rule), method=method, json={}, headers=admin)
            assert answered.status_code not in (401, 403), f"{service} {method} {rule.rule}: {answered.status_code}"
            assert answered.status_code < 500, f"{service} {method} {rule.rule}: {answered.get_data(as_text=True)}"


def customer(customer_id: str) -> dict[str, str]:
    now = datetime.now(UTC)
    claims = {
        "sub": customer_id,
        "iss": "kafka-ecommerce-dev",
        "aud": "kafka-ecommerce",
        "exp": now + timedelta(minutes=5),
    }
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


ORDER = {"items": [{"product_id": "p-1", "quantity": 1, "price": 10.0}], "total_amount": 10.0}


def test_a_customer_orders_reads_lists_and_cancels_only_their_own(apps: dict[str, Flask]) -> None:
    client = apps["order"].test_client()
    alice, bob = customer("alice"), customer("bob")
    placed = client.post("/orders", json={"customer_id": "alice", **ORDER}, headers=alice)
    assert placed.status_code == 201
    order_id = placed.get_json()["order_id"]

    assert client.post("/orders", json={"customer_id": "alice", **ORDER}, headers=bob).status_code == 403
    bulk = client.post("/orders/bulk", json={"orders": [{"customer_id": "alice", **ORDER}]}, headers=bob)
    assert bulk.get_json()["results"][0]["status"] == 403

    assert client.get(f"/orders/{order_id}", headers=alice).status_code == 200
    assert client.get(f"/orders/{order_id}", headers=bob).status_code == 404
    assert client.post(f"/orders/{order_id}/cancel", headers=bob).status_code == 404
    assert client.get("/customers/alice/orders", headers=bob).status_code == 404
    assert client.get("/orders?customer_id=alice", headers=bob).status_code == 404
    assert client.get("/orders", headers=bob).get_json()["orders"] == []
    assert [o["order_id"] for o in client.get("/orders", headers=alice).get_json()["orders"]] == [order_id]
    assert client.post(f"/orders/{order_id}/cancel", headers=alice).status_code == 202


def test_a_customer_token_reaches_nothing_but_orders_and_the_catalogue(apps: dict[str, Flask]) -> None:
    alice = customer("alice")
    assert apps["inventory"].test_client().get("/inventory", headers=alice).status_code == 200
    assert apps["inventory"].test_client().put("/inventory/p-1", json={}, headers=alice).status_code == 403
    assert apps["payment"].test_client().post("/payments/x/refund", headers=alice).status_code == 403
    assert apps["monitoring"].test_client().get("/status", headers=alice).status_code == 403
    assert apps["order"].test_client().get("/metrics", headers=alice).status_code == 403


def test_form_posts_are_refused_with_415(apps: dict[str, Flask], keys: tuple[InMemoryKeyStore, dict[str, str]]) -> None:
    admin = {"Authorization": f"Bearer {keys[1]['admin']}"}
    client = apps["order"].test_client()
    response = client.post("/orders", data={"customer_id": "alice"}, headers=admin)
    assert response.status_code == 415
    as_text = client.post("/orders", data='{"customer_id": "alice"}', headers=admin, content_type="text/plain")
    assert as_text.status_code == 415


def test_every_answer_carries_the_security_headers(apps: dict[str, Flask]) -> None:
    for app in apps.values():
        response = app.test_client().get("/health")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    page = apps["monitoring"].test_client().get("/dashboard")
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
