"""Crash-consistency suite: drive orders while killing services and the broker, then check invariants.

    python -m tests.chaos.run --orders 1000          the full run (`make chaos`)
    python -m tests.chaos.run --orders 200 --rate 10 the short variant CI runs inside `make test`

It starts its own stack on chaos_* databases (dropped first), posts a mix of orders (about 80 %
that should complete, 10 % out of stock, 10 % declined cards; some multi-item, some cancelled;
every order from a distinct customer), `kill -9`s each of the six services in turn at random
moments and restarts it, restarts the Kafka broker once, injects poison messages, then drains
and checks from the services' APIs:

- every accepted order is terminal; stock is conserved per SKU and nothing stays reserved;
- exactly one successful charge per completed order, none left on failed ones;
- exactly one notification per terminal order; no saga step twice in any timeline;
- the DLQ holds nothing but the poison we injected.

It prints one table and exits non-zero on any violation.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from load.shop import CATALOGUE, DECLINED_CARD
from shared import launcher, local_infra
from shared.config import SERVICE_NAMES, Settings, load_settings, process_env
from shared.events import TOPIC_BY_EVENT, Envelope
from shared.kafka_utils import delete_topics, ensure_topics, make_publisher, topic_name
from shared.mongo import make_mongo_client

# Saga steps that must appear at most once in an order's timeline.
SINGLE_STEPS = (
    "OrderCreated",
    "OrderValidated",
    "ReserveInventory",
    "InventoryReserved",
    "PaymentRequested",
    "PaymentCompleted",
    "OrderCompleted",
    "OrderFailed",
    "CommitInventory",
    "NotificationRequested",
)
# Every consumed topic gets each kind of poison: malformed JSON, an unknown type, a broken schema.
POISON_TOPICS = tuple(sorted(set(TOPIC_BY_EVENT.values())))


@dataclass
class Placed:
    order_id: str
    customer_id: str
    kind: str
    items: dict[str, int]
    cancelled: bool = False


@dataclass
class Report:
    placed: list[Placed] = field(default_factory=list)
    refused: int = 0
    kills: list[str] = field(default_factory=list)
    broker_restarts: int = 0
    poison_keys: set[str] = field(default_factory=set)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.random = random.Random(args.seed)
        self.env = {
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
            "APP__SAGA__PAYMENT_TIMEOUT_S": str(args.payment_timeout),
            "APP__SAGA__ORDER_TIMEOUT_S": str(args.order_timeout),
            "APP__NOTIFICATION__FILE_PATH": ".local/chaos-notifications.log",
            # Topics of this run only, deleted at its end: nothing left over from other runs gets in.
            "APP__KAFKA__TOPIC_PREFIX": f"chaos-{uuid.uuid4().hex[:8]}.",
            **{f"{name.upper()}_DATABASE": f"chaos_{name}" for name in SERVICE_NAMES},
        }
        self.settings: Settings = load_settings(env={**process_env(), **self.env})
        self.children: list[launcher.Child] = []
        self.lock = threading.Lock()
        self.report = Report()

    def url(self, service: str, path: str) -> str:
        return self.settings.services[service].url + path

    # -- the stack -------------------------------------------------------------------------
    def start_stack(self) -> None:
        busy = [name for name in SERVICE_NAMES if launcher.health(self.settings, name)[0]]
        if busy:
            raise SystemExit(f"ports of {', '.join(busy)} are in use: stop the running stack first")
        client = make_mongo_client(self.settings.mongo)
        for name in SERVICE_NAMES:
            client.drop_database(self.settings.services[name].database)
        ensure_topics(self.settings.kafka)
        self.children = launcher.start(SERVICE_NAMES, replicas=self.args.replicas, env=self.env)
        launcher.wait_healthy(self.settings, SERVICE_NAMES, self.children, timeout=120)

    def where_is(self, order_id: str) -> str:
        """The order's status and its saga's state, as the services report them."""
        urls = self.settings.services
        try:
            order = requests.get(f"{urls['order'].url}/orders/{order_id}", timeout=5).json()
            saga = requests.get(f"{urls['orchestrator'].url}/flows/{order_id}", timeout=5).json()
        except (requests.RequestException, ValueError) as err:
            return f"(could not ask: {err})"
        return f"order={order.get('status')} saga={saga.get('state')} steps={len(saga.get('steps') or [])}"

    def crash_and_restart(self, service: str) -> None:
        with self.lock:
            victims = [c for c in self.children if c.service == service]
            self.children = [c for c in self.children if c.service != service]
        launcher.kill(victims)
        self.report.kills.append(service)
        time.sleep(self.random.uniform(0.5, 2.0))
        started = launcher.start([service], replicas=self.args.replicas, env=self.env)
        with self.lock:
            self.children += started
        launcher.wait_healthy(self.settings, [service], started, timeout=120)

    def restart_broker(self) -> None:
        if self.settings.kafka.external:
            return
        local_infra.stop_kafka()
        time.sleep(self.random.uniform(2, 5))
        local_infra.start_kafka()
        self.report.broker_restarts += 1

    # -- load ------------------------------------------------------------------------------
    def order_for(self, index: int) -> tuple[str, dict[str, Any]]:
        roll = self.random.random()
        products = sorted(CATALOGUE)
        if roll < 0.10:
            kind, items = "out_of_stock", {"rare_item": 1000}
            if self.random.random() < 0.5:
                items[self.random.choice(products)] = 1  # multi-item, one line can't be met
        else:
            kind = "declined" if roll < 0.20 else "complete"
            items = {p: self.random.randint(1, 2) for p in self.random.sample(products, self.random.randint(1, 3))}
        prices = {**CATALOGUE, "rare_item": 99.99}
        body: dict[str, Any] = {
            "customer_id": f"chaos-{index}-{uuid.uuid4().hex[:8]}",
            "items": [{"product_id": p, "quantity": q, "price": prices[p]} for p, q in items.items()],
            "total_amount": round(sum(q * prices[p] for p, q in items.items()), 2),
        }
        if kind == "declined":
            body["card_details"] = {"number": DECLINED_CARD}
        return kind, body

    def place(self, index: int) -> None:
        kind, body = self.order_for(index)
        key = f"chaos-{uuid.uuid4()}"
        # A crashed order service refuses connections; the same idempotency key makes retrying safe.
        for _attempt in range(60):
            try:
                response = requests.post(
                    self.url("order", "/orders"), json=body, headers={"Idempotency-Key": key}, timeout=10
                )
            except requests.RequestException:
                time.sleep(0.5)
                continue
            if response.status_code in (200, 201):
                order_id = response.json()["order_id"]
                placed = Placed(
                    order_id, body["customer_id"], kind, {i["product_id"]: i["quantity"] for i in body["items"]}
                )
                with self.lock:
                    self.report.placed.append(placed)
                if self.random.random() < self.args.cancel_share:
                    time.sleep(self.random.uniform(0, 0.5))
                    self.cancel(placed)
                return
            if response.status_code < 500:
                raise AssertionError(f"order refused: {response.status_code} {response.text}")
            time.sleep(0.5)
        self.report.refused += 1

    def cancel(self, placed: Placed) -> None:
        for _attempt in range(20):
            try:
                response = requests.post(self.url("order", f"/orders/{placed.order_id}/cancel"), timeout=10)
            except requests.RequestException:
                time.sleep(0.5)
                continue
            placed.cancelled = response.status_code == 202
            return

    def drive_load(self) -> None:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            for index in range(self.args.orders):
                delay = started + index / self.args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self.place, index)

    def inject_poison(self) -> None:
        publisher = make_publisher(self.settings.kafka, "chaos-poison")
        valid = Envelope(event_type="OrderCreated", order_id="x", source="chaos").to_dict()
        poisons = [
            b"{this is not json",
            Envelope(event_type="OrderCreated", order_id="x", source="chaos")
            .to_json()
            .replace(b"OrderCreated", b"NoSuchType"),
            str({**valid, "data": "not-an-object"}).encode(),
        ]
        for topic in POISON_TOPICS:
            for value in poisons:
                key = f"poison-{uuid.uuid4().hex[:10]}"
                publisher.produce_sync(topic_name(self.settings.kafka, topic), key.encode(), value)
                self.report.poison_keys.add(key)

    def run_chaos(self) -> None:
        """Kill each service once, in a random order at random moments, and restart the broker once."""
        duration = self.args.orders / self.args.rate
        actions: list[tuple[float, Any]] = [
            (self.random.uniform(0.05, 0.85) * duration, lambda s=service: self.crash_and_restart(s))
            for service in SERVICE_NAMES
        ]
        if not self.args.no_broker_restart:
            actions.append((0.5 * duration, self.restart_broker))
        started = time.monotonic()
        for moment, action in sorted(actions, key=lambda pair: pair[0]):
            wait = started + moment - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            action()

    # -- checks ----------------------------------------------------------------------------
    def get(self, service: str, path: str, **params: Any) -> Any:
        for _attempt in range(10):
            try:
                response = requests.get(self.url(service, path), params=params, timeout=10)
                if response.status_code < 500:
                    return response.json()
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{service} {path} keeps failing")

    def drain(self) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + self.args.order_timeout + self.args.drain
        finals: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            for placed in self.report.placed:
                if placed.order_id not in finals:
                    order = self.get("order", f"/orders/{placed.order_id}")
                    if order.get("status") in ("completed", "failed"):
                        finals[placed.order_id] = order
            if len(finals) == len(self.report.placed):
                break
            time.sleep(1)
        return finals

    def settle(self) -> None:
        """Wait (bounded) until nothing is reserved any more: commits and releases are done."""
        deadline = time.monotonic() + self.args.drain
        while time.monotonic() < deadline:
            if all(p["reserved"] == 0 for p in self.get("inventory", "/inventory")["products"]):
                return
            time.sleep(1)

    def verify(self, initial: dict[str, dict[str, Any]]) -> None:
        report = self.report
        finals = self.drain()
        self.settle()
        time.sleep(3)  # notifications and timelines trail the terminal status by a few events
        unfinished = [p.order_id for p in report.placed if p.order_id not in finals]
        report.check("every accepted order is terminal", not unfinished, f"{len(unfinished)} not terminal")
        for order_id in unfinished[:5]:  # where they stand, to tell a slow drain from a lost event
            print(f"not terminal: {order_id} {self.where_is(order_id)}")
        for order in finals.values():
            report.outcomes[order["status"] if order["status"] == "completed" else order.get("failure_reason")] += 1
        self.check_stock(initial, finals)
        self.check_charges(finals)
        self.check_notifications(finals)
        self.check_timelines(finals)
        self.check_dlq()

    def check_stock(self, initial: dict[str, dict[str, Any]], finals: dict[str, dict[str, Any]]) -> None:
        now = {p["product_id"]: p for p in self.get("inventory", "/inventory")["products"]}
        sold: Counter[str] = Counter()
        for placed in self.report.placed:
            if finals.get(placed.order_id, {}).get("status") == "completed":
                sold.update(placed.items)
        broken = []
        for product, before in initial.items():
            after = now[product]
            total_before = before["available"] + before["reserved"] + before["sold"]
            total_after = after["available"] + after["reserved"] + after["sold"]
            if total_after != total_before or after["reserved"] or after["available"] < 0:
                broken.append(f"{product}: {before} -> {after}")
            elif after["sold"] - before["sold"] != sold[product]:
                broken.append(
                    f"{product}: sold +{after['sold'] - before['sold']} but completed orders bought {sold[product]}"
                )
        self.report.check("stock conserved, nothing reserved, never oversold", not broken, "; ".join(broken[:5]))

    def check_charges(self, finals: dict[str, dict[str, Any]]) -> None:
        wrong = []
        for order_id, order in finals.items():
            payments = self.get("payment", "/payments", order_id=order_id)["payments"]
            kept = [p for p in payments if p["status"] == "completed"]
            expected = 1 if order["status"] == "completed" else 0
            if len(kept) != expected:
                wrong.append(f"{order_id} {order['status']}: {len(kept)} kept charges")
        self.report.check("one charge per completed order, none on failed", not wrong, "; ".join(wrong[:5]))

    def check_notifications(self, finals: dict[str, dict[str, Any]]) -> None:
        wrong = []
        for placed in self.report.placed:
            if placed.order_id in finals:
                notes = self.get("notification", "/notifications", customer_id=placed.customer_id)["notifications"]
                if len(notes) != 1:
                    wrong.append(f"{placed.order_id}: {len(notes)} notifications")
        self.report.check("one notification per terminal order", not wrong, "; ".join(wrong[:5]))

    def check_timelines(self, finals: dict[str, dict[str, Any]]) -> None:
        wrong = []
        for order_id in finals:
            events = self.get("monitoring", f"/orders/{order_id}/events").get("events", [])
            counts = Counter(e["event_type"] for e in events)
            twice = [t for t in SINGLE_STEPS if counts[t] > 1]
            if twice:
                wrong.append(f"{order_id}: {', '.join(twice)}")
        self.report.check("no saga step twice in any timeline", not wrong, "; ".join(wrong[:5]))

    def check_dlq(self) -> None:
        entries = self.get("monitoring", "/dlq", limit=500).get("entries", [])
        unexplained = [e for e in entries if (e.get("key") or "") not in self.report.poison_keys]
        self.report.check(
            "DLQ holds only injected poison",
            not unexplained,
            f"{len(entries)} entries, {len(unexplained)} unexplained"
            + (f": {unexplained[0].get('error')}" if unexplained else ""),
        )

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        print(f"starting the stack on chaos_* databases ({self.args.orders} orders at {self.args.rate}/s)", flush=True)
        self.start_stack()
        try:
            initial = {p["product_id"]: p for p in self.get("inventory", "/inventory")["products"]}
            self.inject_poison()
            load = threading.Thread(target=self.drive_load)
            load.start()
            self.run_chaos()
            load.join()
            print("load done; draining", flush=True)
            self.verify(initial)
        finally:
            launcher.stop(self.children)
            delete_topics(self.settings.kafka)
        return self.print_report()

    def print_report(self) -> int:
        report = self.report
        print("\n| what | value |\n|---|---|")
        print(f"| orders accepted | {len(report.placed)} (refused {report.refused}) |")
        for outcome, count in sorted(report.outcomes.items()):
            print(f"| outcome {outcome} | {count} |")
        print(f"| cancel requests accepted | {sum(p.cancelled for p in report.placed)} |")
        print(f"| services killed (kill -9) and restarted | {len(report.kills)}: {', '.join(report.kills)} |")
        print(f"| broker restarts | {report.broker_restarts} |")
        print(f"| poison messages injected | {len(report.poison_keys)} |")
        print("\n| invariant | result | detail |\n|---|---|---|")
        for name, ok, detail in report.checks:
            print(f"| {name} | {'PASS' if ok else 'FAIL'} | {detail} |")
        return 0 if report.checks and all(ok for _, ok, _ in report.checks) else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=4.0, help="orders per second (keep it below capacity)")
    parser.add_argument("--replicas", type=int, default=1, help="consumer workers per service")
    parser.add_argument("--cancel-share", type=float, default=0.05)
    parser.add_argument("--payment-timeout", type=float, default=60.0)
    parser.add_argument("--order-timeout", type=float, default=300.0)
    parser.add_argument("--drain", type=float, default=120.0, help="extra seconds to wait for the system to settle")
    parser.add_argument("--no-broker-restart", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return Chaos(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
