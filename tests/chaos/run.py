"""Crash-consistency suite: drive orders while kill -9-ing services, the broker and the store, then
check every invariant against witnesses the code under test does not write through its own APIs.

    python -m tests.chaos.run --orders 1000                  one full run (`make chaos` runs two)
    python -m tests.chaos.run --orders 400 --replicas 3      three workers per service: rebalances mid-batch
    python -m tests.chaos.run --orders 200 --rate 8          the short variant `make test` runs

It starts its own stack on chaos_* databases and topics of its own, posts a mix of orders (about
80 % that should complete, 10 % out of stock, 10 % declined cards; some multi-item; a share
cancelled; every order from a distinct customer), and meanwhile kill -9s each service (all its
processes), with ``--replicas`` > 1 also one worker replica of each (the group rebalances around
the survivors), the Kafka broker and the document store, each at a random moment, restarting
each. Every fault's time and the sagas in flight at that moment are printed; a fault planned but
not carried out fails the run. It injects poison (malformed JSON, an unknown event type, a valid
envelope of the wrong schema) into every topic. Then it drains and checks:

- every order asked for was accepted; the driver saw no 4xx/5xx but retried 503s, no exception;
- every order is terminal and ended as its kind says (cancels: see checks.check_outcomes);
- stock is conserved, per the inventory API and per its database;
- the gateway's ledger (its own file) shows one charge kept per completed order and none on failed
  ones, and agrees with the payment API and the payment database;
- exactly one notification per order in the sender's file, the notification database and API;
- Kafka read from the beginning: one OrderCreated and one terminal event per order, matching the
  order API and the order and orchestrator databases; no saga step under two event ids;
- monitoring's timelines hold each order's end and no step twice (every API read must answer 200);
- the DLQ (its topic and monitoring's API) holds every injected poison and nothing else.

Runs are reproducible from ``--seed``: each order's kind and timing comes from an RNG derived
from the seed and the order's index (not from thread scheduling), the faults from another.
It prints the counts each invariant checked and exits non-zero on any violation.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import requests

from load.shop import CATALOGUE, DECLINED_CARD
from services.payment.ledger import money_by_order, read_ledger
from shared.config import LOCAL_DIR, SERVICE_NAMES, Settings, load_settings, process_env
from shared.events import TOPIC_BY_EVENT, Envelope, iso_now
from shared.kafka_utils import delete_topics, make_publisher, topic_name
from shared.mongo import make_mongo_client
from tests.chaos import checks, faults, witnesses
from tests.chaos.checks import Check, Placed

# Every consumed topic gets each kind of poison.
POISON_TOPICS = tuple(sorted(set(TOPIC_BY_EVENT.values())))
RARE = {"rare_item": 99.99}  # the seed catalogue holds far fewer than an out-of-stock order asks for


class ApiError(Exception):
    """An API the suite reads answered other than 200 (after riding out restarts)."""


@dataclass
class Report:
    placed: list[Placed] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    calls: int = 0
    retried_503: int = 0
    retried_down: int = 0
    faults: list[faults.Fault] = field(default_factory=list)
    poison_keys: set[str] = field(default_factory=set)
    checks: list[Check] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        run_id = uuid.uuid4().hex[:8]
        self.ledger_path = LOCAL_DIR / f"chaos-{run_id}-gateway-ledger.jsonl"
        self.notifications_path = LOCAL_DIR / f"chaos-{run_id}-notifications.log"
        self.env = {
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
            "APP__SAGA__PAYMENT_TIMEOUT_S": str(args.payment_timeout),
            "APP__SAGA__ORDER_TIMEOUT_S": str(args.order_timeout),
            "APP__NOTIFICATION__FILE_PATH": str(self.notifications_path),
            "APP__PAYMENT__LEDGER_PATH": str(self.ledger_path),
            # Topics of this run only, deleted at its end: nothing left over from other runs gets in.
            "APP__KAFKA__TOPIC_PREFIX": f"chaos-{run_id}.",
            "AUTH_DATABASE": "chaos_auth",
            **{f"{name.upper()}_DATABASE": f"chaos_{name}" for name in SERVICE_NAMES},
        }
        self.settings: Settings = load_settings(env={**process_env(), **self.env})
        self.stack = faults.Stack(self.settings, self.env, args.replicas, args.seed)
        self.lock = threading.Lock()
        self.report = Report()

    def url(self, service: str, path: str) -> str:
        return self.settings.services[service].url + path

    def customer_headers(self, customer_id: str) -> dict[str, str]:
        token = self.stack.credentials.customer_token(customer_id, ttl=timedelta(hours=2))
        return {"Authorization": f"Bearer {token}"}

    # -- load ------------------------------------------------------------------------------
    def plan_order(self, index: int) -> tuple[str, dict[str, Any], float | None, random.Random]:
        """The order number ``index`` of this seed: its kind, body and when (if at all) to cancel it."""
        rng = random.Random(f"{self.args.seed}-order-{index}")
        products = sorted(CATALOGUE)
        roll = rng.random()
        if roll < 0.10:
            kind, items = "out_of_stock", {"rare_item": 1000}
            if rng.random() < 0.5:
                items[rng.choice(products)] = 1  # multi-item, one line can't be met
        else:
            kind = "declined" if roll < 0.20 else "complete"
            items = {p: rng.randint(1, 2) for p in rng.sample(products, rng.randint(1, 3))}
        prices = {**CATALOGUE, **RARE}
        body: dict[str, Any] = {
            "customer_id": f"chaos-{index}-{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}",
            "items": [{"product_id": p, "quantity": q, "price": prices[p]} for p, q in items.items()],
            "total_amount": round(sum(q * prices[p] for p, q in items.items()), 2),
        }
        if kind == "declined":
            body["card_details"] = {"number": DECLINED_CARD}
        cancel_after = rng.uniform(0, 0.5) if rng.random() < self.args.cancel_share else None
        return kind, body, cancel_after, rng

    def call(self, method: str, path: str, *, ok: tuple[int, ...], what: str, **kwargs: Any) -> requests.Response:
        """Call the order service, riding out crashes (connection refused) and shed or unready 503s;
        any other status not in ``ok`` is a driver error."""
        deadline = time.monotonic() + self.args.retry_for
        while True:
            with self.lock:
                self.report.calls += 1
            try:
                response = requests.request(method, self.url("order", path), timeout=15, **kwargs)
            except requests.RequestException as err:
                if time.monotonic() > deadline:
                    raise ApiError(f"{what}: order service unreachable for {self.args.retry_for:.0f}s: {err}") from err
                with self.lock:
                    self.report.retried_down += 1
                time.sleep(0.5)
                continue
            if response.status_code in ok:
                return response
            if response.status_code == 503 and time.monotonic() < deadline:
                with self.lock:
                    self.report.retried_503 += 1
                time.sleep(float(response.headers.get("Retry-After") or 0.5))
                continue
            raise ApiError(f"{what}: {method} {path} answered {response.status_code} {response.text[:200]}")

    def place(self, index: int) -> None:
        kind, body, cancel_after, _rng = self.plan_order(index)
        key = f"chaos-{self.args.seed}-{index}"  # the same key on every retry: one order, whatever happens
        try:
            # Placed and cancelled as the customer, with a token of their own (customer ids are per order).
            customer = self.customer_headers(body["customer_id"])
            response = self.call(
                "POST",
                "/orders",
                ok=(200, 201),
                what=f"order {index}",
                json=body,
                headers={**customer, "Idempotency-Key": key},
            )
        except ApiError as err:
            with self.lock:
                self.report.refused.append(str(err))
            raise
        placed = Placed(
            response.json()["order_id"],
            body["customer_id"],
            kind,
            {i["product_id"]: i["quantity"] for i in body["items"]},
            body["total_amount"],
        )
        with self.lock:
            self.report.placed.append(placed)
        if cancel_after is not None:
            time.sleep(cancel_after)
            answer = self.call(
                "POST", f"/orders/{placed.order_id}/cancel", ok=(202, 409), what="cancel", headers=customer
            )
            placed.cancel = "accepted" if answer.status_code == 202 else "too_late"

    def drive_load(self) -> None:
        started = time.monotonic()
        futures: list[Future[None]] = []
        with ThreadPoolExecutor(8) as pool:
            for index in range(self.args.orders):
                delay = started + index / self.args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(self.place, index))
        for index, future in enumerate(futures):
            error = future.exception()
            if error is not None:
                self.report.errors.append(f"order {index}: {type(error).__name__}: {error}")

    def inject_poison(self) -> None:
        publisher = make_publisher(self.settings.kafka, "chaos-poison")
        valid = Envelope(event_type="OrderCreated", order_id="poison", source="chaos").to_dict()
        poisons = [
            b"{this is not json",
            json.dumps({**valid, "event_type": "NoSuchType"}).encode(),
            json.dumps({**valid, "data": "not-an-object", "order_id": 42}).encode(),  # JSON, wrong schema
        ]
        for topic in POISON_TOPICS:
            for value in poisons:
                key = f"poison-{uuid.uuid4().hex[:10]}"
                publisher.produce_sync(topic_name(self.settings.kafka, topic), key.encode(), value)
                self.report.poison_keys.add(key)

    # -- reading back ----------------------------------------------------------------------
    def api(self, service: str, path: str, *, missing_ok: bool = False, **params: Any) -> Any:
        """GET that must answer 200 (or 404, then None, with ``missing_ok``); a service restarting
        (refused, 503) is waited out, for a while."""
        deadline = time.monotonic() + 60
        while True:
            try:
                response = requests.get(
                    self.url(service, path),
                    params=params,
                    headers=self.stack.credentials.headers("OPERATOR_KEY"),
                    timeout=15,
                )
                if response.status_code == 200:
                    return response.json()
                if response.status_code == 404 and missing_ok:
                    return None
                if response.status_code != 503:
                    raise ApiError(f"{service} {path} answered {response.status_code}: {response.text[:200]}")
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise ApiError(f"{service} {path} did not answer 200 within 60s")
            time.sleep(0.5)

    def drain(self) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + self.args.order_timeout + self.args.drain
        finals: dict[str, dict[str, Any]] = {}
        with ThreadPoolExecutor(8) as pool:
            while time.monotonic() < deadline:
                pending = [p.order_id for p in self.report.placed if p.order_id not in finals]
                for order in pool.map(lambda o: self.api("order", f"/orders/{o}"), pending):
                    if order.get("status") in ("completed", "failed"):
                        finals[order["order_id"]] = order
                if len(finals) == len(self.report.placed):
                    break
                time.sleep(1)
        return finals

    def wait_for(self, what: str, read: Callable[[], Any], done: Callable[[Any], bool]) -> Any:
        """Read until ``done`` (bounded by --drain): commits, notifications and timelines trail the end."""
        deadline = time.monotonic() + self.args.drain
        while True:
            seen = read()
            if done(seen):
                return seen
            if time.monotonic() > deadline:
                print(f"  still waiting for {what} after {self.args.drain:.0f}s; checking what is there", flush=True)
                return seen
            time.sleep(1)

    def per_order(self, fetch: Callable[[str], Any]) -> dict[str, Any]:
        with ThreadPoolExecutor(8) as pool:
            ids = [p.order_id for p in self.report.placed]
            return dict(zip(ids, pool.map(fetch, ids), strict=True))

    def verify(self, initial: dict[str, dict[str, Any]], initial_db: dict[str, dict[str, Any]]) -> None:
        """Drain, then check each invariant; an API that fails one check's reads fails that check only."""
        report, placed = self.report, self.report.placed
        ids = {p.order_id for p in placed}
        databases = witnesses.Databases(make_mongo_client(self.settings.mongo), self.settings)
        report.checks += [
            checks.check_accepted(self.args.orders, len(placed), report.refused),
            checks.check_driver(report.errors, report.calls),
        ]
        finals = self.drain()
        terminal = [p.order_id for p in placed if p.order_id in finals]
        self.wait_for("stock to settle", self.stock, lambda products: not any(p["reserved"] for p in products))
        file_lines = self.wait_for(
            "one notification per order",
            lambda: witnesses.notification_lines(self.notifications_path),
            lambda lines: all(lines[o] >= 1 for o in terminal),
        )
        messages = witnesses.read_topics(self.settings)
        events, dead_keys, _not_events = witnesses.events_by_order(messages, witnesses.dead_letter_topic(self.settings))
        for fault in report.faults:
            fault.in_flight = (
                checks.in_flight_at(fault.at, {o: events[o] for o in ids if o in events}) if fault.at else 0
            )
        books = money_by_order(read_ledger(self.ledger_path))
        report.checks += [checks.check_faults(report.faults), checks.check_terminal(placed, finals)]

        def outcomes() -> Check:
            flows = self.per_order(lambda o: self.api("orchestrator", f"/flows/{o}"))
            check, report.outcomes = checks.check_outcomes(placed, finals, flows)
            return check

        def charges() -> list[Check]:
            kept_api = self.per_order(
                lambda o: sum(
                    p["status"] == "completed" for p in self.api("payment", "/payments", order_id=o)["payments"]
                )
            )
            ledger_kept = {o: int(books.get(o, {}).get("charges", 0) - books.get(o, {}).get("refunds", 0)) for o in ids}
            db_kept = databases.kept_payments(ids)  # a Counter: 0 for an order without one
            return [
                checks.check_agree("charges kept: payment API = gateway ledger", _only(kept_api, finals), ledger_kept),
                checks.check_agree(
                    "charges kept: payment database = payment API", _only(kept_api, finals), _only(db_kept, finals)
                ),
            ]

        def notifications_api() -> Check:
            customers = {p.order_id: p.customer_id for p in placed}
            notes = self.per_order(
                lambda o: len(self.api("notification", "/notifications", customer_id=customers[o])["notifications"])
            )
            return checks.check_exactly_one("one notification per order (notification API)", finals, notes)

        def timelines() -> Check:
            seen = self.wait_for(
                "monitoring's timelines",
                lambda: self.per_order(self.timeline),
                lambda lines: all(set(lines[o]) & set(checks.TERMINAL_EVENTS) for o in terminal),
            )
            return checks.check_timelines(placed, finals, seen)

        def dlq_api() -> list[Check]:
            page = self.api("monitoring", "/dlq", limit=500)
            keys = [e.get("key") for e in page["entries"]]
            result = [checks.check_dead_letters(report.poison_keys, keys, "monitoring API")]
            if page["total"] > len(page["entries"]):
                result.append(Check("DLQ fits one page of monitoring's API", False, page["total"], "raise the limit"))
            return result

        self.checked("order outcomes (orchestrator API)", outcomes)
        self.checked(
            "stock (inventory API)",
            lambda: checks.check_stock(
                initial, {p["product_id"]: p for p in self.stock()}, placed, finals, "inventory API"
            ),
        )
        report.checks += [
            checks.check_stock(initial_db, databases.stock(), placed, finals, "inventory database"),
            checks.check_money(placed, finals, books),
        ]
        self.checked("charges kept (payment API)", charges)
        report.checks += [
            checks.check_exactly_one("one notification per order (sender's file)", finals, file_lines),
            checks.check_exactly_one(
                "one notification per order (notification database)", finals, databases.notifications(ids)
            ),
        ]
        self.checked("one notification per order (notification API)", notifications_api)
        report.checks += [
            checks.check_kafka(placed, finals, events),
            checks.check_agree(
                "order status: order database = order API",
                {o: checks.outcome(f) for o, f in finals.items()},
                {o: checks.outcome(d) for o, d in databases.orders(ids).items()},
            ),
            checks.check_agree(
                "saga state: orchestrator database = order API",
                {o: f["status"] for o, f in finals.items()},
                databases.sagas(ids),
            ),
        ]
        self.checked("monitoring timelines (monitoring API)", timelines)
        report.checks.append(checks.check_dead_letters(report.poison_keys, dead_keys, "its Kafka topic"))
        self.checked("DLQ (monitoring API)", dlq_api)

    def checked(self, name: str, build: Callable[[], Check | list[Check]]) -> None:
        """Add the check(s) ``build`` makes; if an API it reads fails, a failed check saying so instead."""
        try:
            result = build()
        except ApiError as err:
            self.report.checks.append(Check(f"{name}: every read answered 200", False, 0, str(err)))
            return
        self.report.checks += result if isinstance(result, list) else [result]

    def timeline(self, order_id: str) -> list[str]:
        """The event types monitoring shows for the order; none yet (404) while it has not seen the order."""
        body = self.api("monitoring", f"/orders/{order_id}/events", missing_ok=True)
        return [e["event_type"] for e in body["events"]] if body else []

    def stock(self) -> list[dict[str, Any]]:
        return self.api("inventory", "/inventory")["products"]

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        args = self.args
        print(
            f"chaos: {args.orders} orders at {args.rate}/s, {args.replicas} worker(s) per service, seed {args.seed}, "
            f"faults {args.faults}; ledger {self.ledger_path}, notifications {self.notifications_path}",
            flush=True,
        )
        self.stack.start()
        try:
            initial = {p["product_id"]: p for p in self.stock()}
            initial_db = witnesses.Databases(make_mongo_client(self.settings.mongo), self.settings).stock()
            self.inject_poison()
            duration = args.orders / args.rate
            self.report.faults = faults.plan(self.stack, set(args.faults.split(",")), duration, args.seed)
            load = threading.Thread(target=self.drive_load)
            load.start()
            faults.inflict(self.report.faults)
            load.join()
            load_ended = iso_now()
            for fault in self.report.faults:
                fault.during_load = bool(fault.at) and fault.at < load_ended
            print("load done; draining", flush=True)
            try:
                self.verify(initial, initial_db)
            except ApiError as err:  # the order service's reads: nothing else can be checked without them
                self.report.checks.append(Check("order API: every read answered 200", False, 0, str(err)))
        finally:
            self.stack.stop()
            delete_topics(self.settings.kafka)
        return self.print_report()

    def print_report(self) -> int:
        report = self.report
        print("\n| what | value |\n|---|---|")
        print(f"| orders asked / accepted | {self.args.orders} / {len(report.placed)} |")
        print(
            f"| HTTP calls by the driver | {report.calls} ({report.retried_503} retried after 503, "
            f"{report.retried_down} while the order service was down) |"
        )
        for name, count in sorted(report.outcomes.items()):
            print(f"| ended as expected: {name} | {count} |")
        print(f"| poison messages injected | {len(report.poison_keys)} |")
        print("\n| fault | at (UTC) | during load | pids killed | back after | sagas in flight |")
        print("|---|---|---|---|---|---|")
        for f in report.faults:
            load = "yes" if f.during_load else "no (after)"
            print(f"| {f.name} | {f.at[11:23]} | {load} | {f.killed or '-'} | {f.down_s}s | {f.in_flight} |")
        print("\n| invariant | result | checked | detail |\n|---|---|---|---|")
        for check in report.checks:
            print(f"| {check.name} | {'PASS' if check.ok else 'FAIL'} | {check.checked} | {check.detail} |")
        return 0 if report.checks and all(c.ok for c in report.checks) else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=4.0, help="orders per second (keep it below capacity)")
    parser.add_argument("--replicas", type=int, default=1, help="consumer workers per service")
    parser.add_argument("--cancel-share", type=float, default=0.05)
    parser.add_argument("--payment-timeout", type=float, default=60.0)
    parser.add_argument("--order-timeout", type=float, default=300.0)
    parser.add_argument("--drain", type=float, default=120.0, help="extra seconds to wait for the system to settle")
    parser.add_argument("--retry-for", type=float, default=120.0, help="how long the driver retries one call")
    parser.add_argument(
        "--faults", default=",".join(faults.FAULT_KINDS), help=f"comma-separated, of {', '.join(faults.FAULT_KINDS)}"
    )
    parser.add_argument("--seed", type=int, default=None, help="reproduce a run (default: a new one, printed)")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(10**6)
    unknown = set(args.faults.split(",")) - set(faults.FAULT_KINDS) - {""}
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    return args


def _only(values: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: values[k] for k in keys}


def main(argv: list[str] | None = None) -> int:
    return Chaos(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
