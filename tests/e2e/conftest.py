"""The running stack: all six services as processes against the real Kafka and MongoDB-protocol server.

The stack uses databases of its own (e2e_*) dropped at the start, so every run starts from
the seed catalogue and never touches the data of `make run`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack import launcher
from devstack.credentials import Credentials
from shared.config import SERVICE_NAMES, Settings
from shared.kafka_utils import delete_topics
from shared.mongo import make_mongo_client

E2E_ENV = {
    "ENVIRONMENT": "test",
    "AUTH_DATABASE": "e2e_auth",
    # Topics of this session only, deleted at its end.
    "APP__KAFKA__TOPIC_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}.",
    "APP__NOTIFICATION__FILE_PATH": ".local/e2e-notifications.log",
    **{f"{name.upper()}_DATABASE": f"e2e_{name}" for name in SERVICE_NAMES},
}


class Http:
    """requests with this stack's credentials on every call (an admin key unless told otherwise)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None, **kwargs: Any):
        return requests.request(method, url, headers={**self._headers, **(headers or {})}, **kwargs)

    def get(self, url: str, **kwargs: Any):
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any):
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any):
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any):
        return self.request("DELETE", url, **kwargs)


@dataclass
class Stack:
    settings: Settings
    credentials: Credentials
    children: list[launcher.Child] = field(default_factory=list)
    # Where each service log file ended before this stack started (the launcher appends to them).
    log_offsets: dict[Path, int] = field(default_factory=dict)

    @property
    def http(self) -> Http:
        return Http(self.credentials.headers("ADMIN_KEY"))

    def as_customer(self, customer_id: str) -> Http:
        return Http({"Authorization": f"Bearer {self.credentials.customer_token(customer_id)}"})

    def with_key(self, name: str) -> Http:
        return Http(self.credentials.headers(name))

    def url(self, service: str, path: str = "") -> str:
        return self.settings.services[service].url + path

    def restart(self, service: str) -> None:
        """Stop a service's processes and start them again on the same databases."""
        mine = [c for c in self.children if c.service == service]
        launcher.stop(mine)
        self.children = [c for c in self.children if c.service != service]
        started = launcher.start([service], env=E2E_ENV)
        self.children += started
        launcher.wait_healthy(self.settings, [service], started, timeout=60)

    def stop_worker(self, service: str) -> None:
        """Stop a service's consumer worker; its API goes on answering."""
        workers = [c for c in self.children if c.service == service and c.role == "worker"]
        launcher.stop(workers)
        self.children = [c for c in self.children if c not in workers]

    def start_worker(self, service: str) -> None:
        """Start a service's consumer worker again, on the same databases and topics."""
        if not any(c.service == service and c.role == "worker" for c in self.children):
            self.children += launcher.start([service], env=E2E_ENV, roles=("worker",))

    def logs_written(self) -> dict[Path, str]:
        """What the stack's processes wrote to their log files since it started, by file."""
        written = {}
        for path in sorted(launcher.LOG_DIR.glob("*.log")):
            if path.name.split("-", 1)[0] in SERVICE_NAMES:
                with path.open("rb") as log:
                    log.seek(self.log_offsets.get(path, 0))
                    written[path] = log.read().decode("utf-8", "replace")
        return written

    def db(self, service: str):
        return make_mongo_client(self.settings.mongo)[self.settings.services[service].database]


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    offsets = {path: path.stat().st_size for path in launcher.LOG_DIR.glob("*.log")}
    try:
        settings, children, credentials = launcher.start_fresh(E2E_ENV, timeout=90)
    except RuntimeError as err:
        pytest.fail(f"the e2e stack did not start: {err}")
    stack = Stack(settings, credentials, children, offsets)
    try:
        yield stack
    finally:
        launcher.stop(stack.children)
        delete_topics(settings.kafka)


def wait_until(check: Callable[[], Any], timeout: float = 45.0, interval: float = 0.2, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or check}; last value {last!r}")


def new_customer() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


def order_body(items: list[tuple[str, int, float]], **extra: Any) -> dict[str, Any]:
    lines = [{"product_id": p, "quantity": q, "price": price} for p, q, price in items]
    total = round(sum(q * price for _, q, price in items), 2)
    return {"customer_id": new_customer(), "items": lines, "total_amount": total, **extra}


@pytest.fixture
def place(stack: Stack) -> Callable[..., dict[str, Any]]:
    """POST an order and return its body; asserts it was accepted."""

    def place(body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = stack.http.post(stack.url("order", "/orders"), json=body, headers=headers, timeout=10)
        assert response.status_code in (200, 201), response.text
        return response.json()

    return place


@pytest.fixture
def terminal(stack: Stack) -> Callable[[str], dict[str, Any]]:
    """Wait until an order is completed or failed and return it."""

    def terminal(order_id: str, timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            order = stack.http.get(stack.url("order", f"/orders/{order_id}"), timeout=5).json()
            return order if order.get("status") in ("completed", "failed") else None

        return wait_until(check, timeout, what=f"order {order_id} to finish")

    return terminal


def stock(stack: Stack, product_id: str) -> dict[str, Any]:
    response = stack.http.get(stack.url("inventory", f"/inventory/{product_id}"), timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def create_product(stack: Stack, product_id: str, price: float, quantity: int) -> None:
    """Add a product of the test's own, so stock assertions don't depend on other tests."""
    body = {"name": f"E2E {product_id}", "price": price, "quantity": quantity}
    response = stack.http.put(stack.url("inventory", f"/inventory/{product_id}"), json=body, timeout=5)
    assert response.status_code == 201, response.text
