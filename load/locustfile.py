"""Locust scenarios: shoppers placing orders and following them, browsers of the catalogue.

Headless: `make load` (50 users, 60 s, CSV + HTML reports in load/reports/).
Each user talks to several services, so hosts come from the config, not from --host.
Every user is a customer of its own with a token minted from the local stack's development JWT
secret (`make run` writes it to .local/), as a shop's identity provider would issue it.
"""

from __future__ import annotations

import random
import time
import uuid

from locust import HttpUser, between, events, task

from devstack.credentials import from_local_files
from load.shop import CATALOGUE, DECLINED_CARD, expected_outcome, outcome_mismatch, retry_after_s
from shared.config import load_settings

SETTINGS = load_settings()
CREDENTIALS = from_local_files()
ORDER_URL = SETTINGS.services["order"].url
INVENTORY_URL = SETTINGS.services["inventory"].url
TERMINAL = {"completed", "failed"}
POST_ATTEMPTS = 10  # a POST shed with 503 is posted again after its Retry-After, this many times in all


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--declined-share", type=float, default=0.05, help="share of orders paid with a declined card")


class Shopper(HttpUser):
    """Places orders of 1 to 3 items, polls each to the end, lists their own orders."""

    host = ORDER_URL
    wait_time = between(0.5, 2.0)
    weight = 4

    def on_start(self) -> None:
        self.customer_id = f"load-{uuid.uuid4().hex[:12]}"
        self.client.headers["Authorization"] = f"Bearer {CREDENTIALS.customer_token(self.customer_id)}"

    @task(5)
    def place_and_follow(self) -> None:
        products = random.sample(sorted(CATALOGUE), k=random.randint(1, 3))
        items = [{"product_id": p, "quantity": random.randint(1, 2), "price": CATALOGUE[p]} for p in products]
        body = {
            "customer_id": self.customer_id,
            "items": items,
            "total_amount": round(sum(i["quantity"] * i["price"] for i in items), 2),
            "customer_email": f"{self.customer_id}@example.com",
        }
        declined = random.random() < self.environment.parsed_options.declined_share
        if declined:
            body["card_details"] = {"number": DECLINED_CARD}
        order_id = self.post_order(body)
        if order_id is not None:
            self.follow(order_id, expected_outcome(declined))

    def post_order(self, body: dict) -> str | None:
        """POST the order; a 503 with Retry-After wrote nothing, so wait as asked and post again."""
        for attempt in range(1, POST_ATTEMPTS + 1):
            with self.client.post("/orders", json=body, name="POST /orders", catch_response=True) as response:
                wait = retry_after_s(response.status_code, response.headers)
                if wait is not None and attempt < POST_ATTEMPTS:
                    # Shed while the order service's outbox relay catches up: not a failure of the
                    # order, so it gets a row of its own instead of POST /orders' latency and errors.
                    response.request_meta["name"] = "POST /orders shed (503, retried)"
                    response.success()
                elif response.status_code != 201:
                    tried = f" (attempt {attempt} of {POST_ATTEMPTS})" if wait is not None else ""
                    detail = response.text[:200] if response.status_code else repr(response.error)
                    response.failure(f"status {response.status_code}{tried}: {detail}")
                    return None
                else:
                    return response.json()["order_id"]
            time.sleep(wait)
        return None

    def follow(self, order_id: str, expected: str) -> None:
        """Poll the order to its end; an end other than ``expected`` or none in 60 s is a failure."""
        started = time.monotonic()
        while time.monotonic() - started < 60:
            time.sleep(0.25)
            with self.client.get(f"/orders/{order_id}", name="GET /orders/{id}", catch_response=True) as poll:
                if poll.status_code != 200:
                    poll.failure(f"status {poll.status_code}")
                    return
                order = poll.json()
            if order["status"] in TERMINAL:
                # Without the order id, so locust counts the failures by kind.
                mismatch = outcome_mismatch(expected, order["status"], order.get("failure_reason"))
                self.flow_ended(started, AssertionError(mismatch) if mismatch else None)
                return
        self.flow_ended(started, TimeoutError(f"order {order_id} not terminal after 60 s"))

    def flow_ended(self, started: float, exception: Exception | None) -> None:
        events.request.fire(
            request_type="FLOW",
            name="order to terminal",
            response_time=(time.monotonic() - started) * 1000,
            response_length=0,
            exception=exception,
            context={},
        )

    @task(1)
    def list_my_orders(self) -> None:
        self.client.get(f"/customers/{self.customer_id}/orders", name="GET /customers/{id}/orders")


class Browser(HttpUser):
    """Looks at the catalogue."""

    host = INVENTORY_URL
    wait_time = between(0.5, 2.0)
    weight = 1

    def on_start(self) -> None:
        customer_id = f"browse-{uuid.uuid4().hex[:12]}"
        self.client.headers["Authorization"] = f"Bearer {CREDENTIALS.customer_token(customer_id)}"

    @task(3)
    def catalogue(self) -> None:
        self.client.get("/inventory", name="GET /inventory")

    @task(1)
    def product(self) -> None:
        self.client.get(f"/inventory/{random.choice(sorted(CATALOGUE))}", name="GET /inventory/{id}")
