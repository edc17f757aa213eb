"""Locust scenarios: shoppers placing orders and following them, browsers of the catalogue.

Headless: `make load` (50 users, 60 s, CSV + HTML reports in load/reports/).
Each user talks to several services, so hosts come from the config, not from --host.
"""

from __future__ import annotations

import random
import time
import uuid

from locust import HttpUser, between, events, task

from load.shop import CATALOGUE, DECLINED_CARD
from shared.config import load_settings

SETTINGS = load_settings()
ORDER_URL = SETTINGS.services["order"].url
INVENTORY_URL = SETTINGS.services["inventory"].url
TERMINAL = {"completed", "failed"}


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
        if random.random() < self.environment.parsed_options.declined_share:
            body["card_details"] = {"number": DECLINED_CARD}
        with self.client.post("/orders", json=body, name="POST /orders", catch_response=True) as response:
            if response.status_code == 503 and response.headers.get("Retry-After"):
                # Shed while the order service's outbox relay catches up: a real client waits and retries.
                response.failure("503 overloaded (shed, will retry)")
                time.sleep(float(response.headers["Retry-After"]))
                return
            if response.status_code != 201:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            order_id = response.json()["order_id"]
        started = time.monotonic()
        while time.monotonic() - started < 60:
            time.sleep(0.25)
            with self.client.get(f"/orders/{order_id}", name="GET /orders/{id}", catch_response=True) as poll:
                if poll.status_code != 200:
                    poll.failure(f"status {poll.status_code}")
                    return
                if poll.json()["status"] in TERMINAL:
                    events.request.fire(
                        request_type="FLOW",
                        name="order to terminal",
                        response_time=(time.monotonic() - started) * 1000,
                        response_length=0,
                        exception=None,
                        context={},
                    )
                    return
        events.request.fire(
            request_type="FLOW",
            name="order to terminal",
            response_time=60_000,
            response_length=0,
            exception=TimeoutError(f"order {order_id} not terminal after 60 s"),
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

    @task(3)
    def catalogue(self) -> None:
        self.client.get("/inventory", name="GET /inventory")

    @task(1)
    def product(self) -> None:
        self.client.get(f"/inventory/{random.choice(sorted(CATALOGUE))}", name="GET /inventory/{id}")
