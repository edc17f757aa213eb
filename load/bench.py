"""End-to-end benchmark against a running stack.

    python -m load.bench --orders 2000 --rate max      as fast as the stack takes them
    python -m load.bench --orders 3000 --rate 100      a steady 100 orders/s
    python -m load.bench --compare-replicas 1,3        start a stack per worker count and compare

It posts orders, follows each to its terminal event on Kafka, and prints a table and JSON:
completed orders/s, POST latency, POST-to-terminal latency, service CPU seconds per order,
peak RSS per service, Kafka messages and Mongo round trips per order. It fails (exit 1)
unless every order ended and the stock adds up, so a fast wrong run cannot pass.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psutil
import requests
from confluent_kafka import Consumer

from load.shop import CATALOGUE, DECLINED_CARD
from shared import launcher
from shared.config import LOCAL_DIR, SERVICE_NAMES, Settings, load_settings, process_env
from shared.events import Envelope
from shared.kafka_utils import delete_topics, topic_name
from shared.mongo import make_mongo_client

REPORT_DIR = LOCAL_DIR / "bench"


@dataclass
class Run:
    orders: int
    post_latency: list[float] = field(default_factory=list)
    posted_at: dict[str, float] = field(default_factory=dict)
    terminal: dict[str, tuple[str, float]] = field(default_factory=dict)
    ordered: dict[str, dict[str, int]] = field(default_factory=dict)
    rejected: int = 0
    shed: int = 0  # 503 "overloaded" answers, each retried after its Retry-After


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def service_processes() -> dict[str, list[psutil.Process]]:
    """Find every process of every service: `main.py <service> api|worker` and their children."""
    found: dict[str, list[psutil.Process]] = {name: [] for name in SERVICE_NAMES}
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        for name in SERVICE_NAMES:
            if any(part.endswith("main.py") for part in cmd) and name in cmd:
                found[name] += [proc, *proc.children(recursive=True)]
    return found


def cpu_seconds(processes: dict[str, list[psutil.Process]]) -> float:
    total = 0.0
    for procs in processes.values():
        for proc in procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
    return total


class RssSampler(threading.Thread):
    def __init__(self, processes: dict[str, list[psutil.Process]]) -> None:
        super().__init__(daemon=True)
        self.processes = processes
        self.peak: dict[str, float] = dict.fromkeys(processes, 0.0)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for name, procs in self.processes.items():
                rss = 0
                for proc in procs:
                    try:
                        rss = max(rss, proc.memory_info().rss)  # per process: each must stay small
                    except psutil.Error:
                        continue
                self.peak[name] = max(self.peak[name], rss / 2**20)


def metric_by_service(settings: Settings, name: str) -> dict[str, float]:
    """Sum a counter over each service's /metrics (a service that does not answer counts 0)."""
    totals = dict.fromkeys(SERVICE_NAMES, 0.0)
    for service in SERVICE_NAMES:
        try:
            text = requests.get(settings.services[service].url + "/metrics", timeout=5).text
        except requests.RequestException:
            continue
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                totals[service] += float(line.rsplit(" ", 1)[-1])
    return totals


def metric_total(settings: Settings, name: str) -> float:
    """Sum a counter over every service's /metrics."""
    return sum(metric_by_service(settings, name).values())


def stock(settings: Settings) -> dict[str, dict[str, int]]:
    products = requests.get(settings.services["inventory"].url + "/inventory", timeout=10).json()["products"]
    return {p["product_id"]: p for p in products}


def restock(settings: Settings, current: dict[str, dict[str, int]], units: int) -> None:
    """Top up every product the benchmark buys to ``units`` available, so repeated runs never sell out
    (a sold-out product fails orders fast and would flatter the figures)."""
    for product_id in CATALOGUE:
        missing = units - current.get(product_id, {}).get("available", 0)
        if missing > 0:
            url = f"{settings.services['inventory'].url}/inventory/{product_id}"
            requests.put(url, json={"quantity": missing}, timeout=10).raise_for_status()


def follow_terminal_events(settings: Settings, run: Run, ready: threading.Event, stop: threading.Event) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
        }
    )
    topics = [topic_name(settings.kafka, t) for t in ("orders.completed", "orders.failed")]
    consumer.subscribe(topics, on_assign=lambda *_: ready.set())
    try:
        while not stop.is_set():
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            event = Envelope.from_json(msg.value())
            if event.order_id in run.posted_at or event.order_id in run.ordered:
                status = "completed" if event.event_type == "OrderCompleted" else event.data.get("reason", "failed")
                run.terminal.setdefault(event.order_id, (status, time.monotonic()))
    finally:
        consumer.close()


def post_orders(settings: Settings, run: Run, rate: float | None, concurrency: int, declined: float) -> float:
    url = settings.services["order"].url + "/orders"
    local = threading.local()
    started = time.monotonic()
    products = sorted(CATALOGUE)

    def post(index: int) -> None:
        if rate:
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        chosen = random.sample(products, k=random.randint(1, 3))
        items = [{"product_id": p, "quantity": 1, "price": CATALOGUE[p]} for p in chosen]
        body = {
            "customer_id": f"bench-{uuid.uuid4().hex[:12]}",
            "items": items,
            "total_amount": round(sum(CATALOGUE[p] for p in chosen), 2),
        }
        if random.random() < declined:
            body["card_details"] = {"number": DECLINED_CARD}
        sent = time.monotonic()
        response = session.post(url, json=body, timeout=30)
        while response.status_code == 503 and response.headers.get("Retry-After"):
            # The order service sheds writes while its outbox relay is behind: wait and post again.
            run.shed += 1
            time.sleep(float(response.headers["Retry-After"]))
            response = session.post(url, json=body, timeout=30)
        run.post_latency.append(time.monotonic() - sent)
        if response.status_code != 201:
            run.rejected += 1
            return
        order_id = response.json()["order_id"]
        run.ordered[order_id] = {p: 1 for p in chosen}
        run.posted_at[order_id] = sent

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, range(run.orders)))
    return time.monotonic() - started


def bench(settings: Settings, args: argparse.Namespace) -> dict:
    """Run one benchmark against the stack described by ``settings``; return the figures."""
    processes = service_processes()
    missing = [name for name, procs in processes.items() if not procs]
    if missing:
        raise SystemExit(f"no running processes found for {', '.join(missing)}: start the stack (`make run`)")
    orders, rate, timeout = args.orders, parse_rate(args.rate), args.timeout
    run = Run(orders)
    ready, stop = threading.Event(), threading.Event()
    follower = threading.Thread(target=follow_terminal_events, args=(settings, run, ready, stop), daemon=True)
    follower.start()
    if not ready.wait(30):
        raise SystemExit("could not subscribe to the terminal topics")
    time.sleep(1)
    restock(settings, stock(settings), units=orders)
    stock_before = stock(settings)
    kafka_before = metric_total(settings, "events_published_total")
    mongo_before = metric_by_service(settings, "mongo_commands_total")
    cpu_before = cpu_seconds(processes)
    sampler = RssSampler(processes)
    sampler.start()

    started = time.monotonic()
    post_seconds = post_orders(settings, run, rate, args.concurrency, args.declined)
    deadline = time.monotonic() + timeout
    while len(run.terminal) < len(run.ordered) and time.monotonic() < deadline:
        time.sleep(0.2)
    last_terminal = max((t for _, t in run.terminal.values()), default=time.monotonic())
    elapsed = last_terminal - started
    settle_stock(settings, stock_before, timeout)  # commits trail the terminal events
    cpu = cpu_seconds(processes) - cpu_before
    sampler.stop.set()
    stop.set()
    kafka_messages = metric_total(settings, "events_published_total") - kafka_before
    mongo_after = metric_by_service(settings, "mongo_commands_total")
    mongo_by_service = {name: mongo_after[name] - mongo_before[name] for name in SERVICE_NAMES}
    stock_after = stock(settings)

    completed = [o for o, (status, _) in run.terminal.items() if status == "completed"]
    flow = [run.terminal[o][1] - run.posted_at[o] for o in run.terminal]
    problems = check_stock(stock_before, stock_after, run, completed)
    unfinished = len(run.ordered) - len(run.terminal)
    if unfinished:
        problems.append(f"{unfinished} orders did not finish within {timeout:.0f}s")
    accepted = max(1, len(run.ordered))
    return {
        "orders_posted": orders,
        "orders_accepted": len(run.ordered),
        "orders_rejected": run.rejected,
        "posts_shed_and_retried": run.shed,
        "orders_completed": len(completed),
        "orders_failed": len(run.terminal) - len(completed),
        "post_rate_per_s": round(len(run.ordered) / post_seconds, 1),
        "completed_per_s": round(len(completed) / elapsed, 1) if elapsed > 0 else 0.0,
        "post_latency_ms": {q: round(percentile(run.post_latency, v) * 1000, 1) for q, v in QUANTILES},
        "post_to_terminal_ms": {q: round(percentile(flow, v) * 1000, 1) for q, v in QUANTILES},
        "cpu_ms_per_completed_order": round(cpu * 1000 / max(1, len(completed)), 2),
        "peak_rss_mb": {k: round(v, 1) for k, v in sampler.peak.items()},
        "kafka_messages_per_order": round(kafka_messages / accepted, 1),
        "mongo_commands_per_order": round(sum(mongo_by_service.values()) / accepted, 1),
        "mongo_commands_per_order_by_service": {k: round(v / accepted, 1) for k, v in mongo_by_service.items()},
        "problems": problems,
    }


QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def settle_stock(settings: Settings, before: dict[str, dict[str, int]], timeout: float) -> None:
    """Wait (bounded) until no more stock is reserved than before the run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = stock(settings)
        if all(now[p]["reserved"] <= before[p]["reserved"] for p in CATALOGUE):
            return
        time.sleep(0.5)


def check_stock(before: dict, after: dict, run: Run, completed: list[str]) -> list[str]:
    """Every completed order's items are sold, nothing stays reserved, nothing else moved."""
    sold: dict[str, int] = {}
    for order_id in completed:
        for product, quantity in run.ordered[order_id].items():
            sold[product] = sold.get(product, 0) + quantity
    problems = []
    for product in CATALOGUE:
        b, a = before[product], after[product]
        if a["sold"] - b["sold"] != sold.get(product, 0):
            problems.append(
                f"{product}: sold moved by {a['sold'] - b['sold']}, completed orders bought {sold.get(product, 0)}"
            )
        if a["available"] - b["available"] != -sold.get(product, 0):
            problems.append(f"{product}: available moved by {a['available'] - b['available']}")
        if a["reserved"] != b["reserved"]:
            problems.append(f"{product}: reserved {b['reserved']} -> {a['reserved']}")
    return problems


def print_table(results: dict[str, dict]) -> None:
    rows = [
        (
            "orders accepted / completed / failed",
            lambda r: f"{r['orders_accepted']} / {r['orders_completed']} / {r['orders_failed']}",
        ),
        ("POST rate (orders/s)", lambda r: r["post_rate_per_s"]),
        ("POSTs shed (503) and retried", lambda r: r["posts_shed_and_retried"]),
        ("completed orders/s", lambda r: r["completed_per_s"]),
        ("POST latency p50/p95/p99 ms", lambda r: "/".join(str(v) for v in r["post_latency_ms"].values())),
        ("POST-to-terminal p50/p95/p99 ms", lambda r: "/".join(str(v) for v in r["post_to_terminal_ms"].values())),
        ("service CPU ms per completed order", lambda r: r["cpu_ms_per_completed_order"]),
        ("Kafka messages per order", lambda r: r["kafka_messages_per_order"]),
        ("Mongo round trips per order", lambda r: r["mongo_commands_per_order"]),
        (
            "  by service",
            lambda r: ", ".join(f"{k} {v}" for k, v in r["mongo_commands_per_order_by_service"].items()),
        ),
        ("peak RSS MB (max process)", lambda r: ", ".join(f"{k} {v}" for k, v in r["peak_rss_mb"].items())),
        ("problems", lambda r: "; ".join(r["problems"]) or "none"),
    ]
    names = list(results)
    print(f"{'':38}" + "".join(f"{n:>30}" for n in names))
    for label, value in rows:
        print(f"{label:38}" + "".join(f"{value(results[n])!s:>30}" for n in names))


def compare_replicas(counts: list[int], args: argparse.Namespace) -> dict[str, dict]:
    """Start a fresh stack per worker count on bench databases and topics, benchmark it, stop it."""
    results = {}
    for count in counts:
        # Topics (and so consumer groups) of its own: a backlog another stack left in the usual
        # topics would otherwise be worked off during the measurement.
        env = {
            **{f"{name.upper()}_DATABASE": f"bench_{name}" for name in SERVICE_NAMES},
            "LOG_LEVEL": "WARNING",
            "APP__KAFKA__TOPIC_PREFIX": f"bench-{int(time.time())}-{count}.",
        }
        settings = load_settings(env={**process_env(), **env})
        client = make_mongo_client(settings.mongo)
        for name in SERVICE_NAMES:
            client.drop_database(settings.services[name].database)
        children = launcher.start(SERVICE_NAMES, replicas=count, env=env)
        try:
            launcher.wait_healthy(settings, SERVICE_NAMES, children, timeout=90)
            time.sleep(5)  # let every worker join its group before measuring
            results[f"{count} worker(s)"] = bench(settings, args)
        finally:
            launcher.stop(children)
            delete_topics(settings.kafka)
    return results


def parse_rate(raw: str) -> float | None:
    return None if raw == "max" else float(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--rate", default="max", help="orders per second, or max")
    parser.add_argument("--concurrency", type=int, default=16, help="parallel HTTP clients")
    parser.add_argument("--declined", type=float, default=0.0, help="share of orders with a declined card")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the last order")
    parser.add_argument("--compare-replicas", help="comma-separated worker counts, e.g. 1,3 (starts its own stack)")
    args = parser.parse_args(argv)

    if args.compare_replicas:
        results = compare_replicas([int(n) for n in args.compare_replicas.split(",")], args)
    else:
        settings = load_settings()
        results = {"this stack": bench(settings, args)}
    print_table(results)
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    report = REPORT_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report.write_text(json.dumps({"machine": machine(), "args": vars(args), "results": results}, indent=2))
    print(f"\nJSON report: {report}")
    print(json.dumps(results))
    return 1 if any(r["problems"] for r in results.values()) else 0


def machine() -> dict:
    return {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    sys.exit(main())
