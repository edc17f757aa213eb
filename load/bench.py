"""End-to-end benchmark against a running stack.

    python -m load.bench --orders 2000 --rate max      as fast as the stack takes them
    python -m load.bench --orders 3000 --rate 100      a steady 100 orders/s
    python -m load.bench --compare-replicas 1,3        start a stack per worker count and compare

It posts orders, follows each to its terminal event on Kafka, and prints a table and JSON:
completed orders/s, POST latency, POST-to-terminal latency, service CPU seconds per order,
peak RSS per service, Kafka messages and Mongo round trips per order.

It fails (exit 1, the reasons under "problems") when no order was accepted, when any POST was
finally refused (a 503 with Retry-After is retried, at most --shed-retries times), when any order
ended other than it must (declined card: failed with payment_declined; else completed) or not
within --timeout, when the stock does not add up, or when a service's /metrics does not answer.
Each check prints how many things it checked, so a pass that checked nothing shows.

CPU and RSS are those of the stack's own processes: the ones named by the launcher's PID files
(.local/run/services, written by `make run`) or, with --compare-replicas, the ones it started,
plus all their descendants, found again every 0.5 s so processes that restart mid-run count too.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil
import requests
from confluent_kafka import Consumer

from devstack import launcher
from devstack.credentials import Credentials, from_local_files
from load.metrics import MetricsUnavailable, http_get, scrape, service_urls
from load.shop import CATALOGUE, DECLINED_CARD, expected_outcome, outcome, outcome_problem, retry_after_s
from load.usage import PsutilProcessTable, Roots, Sampler, StackUsage, children_roots, pid_file_roots
from shared.config import LOCAL_DIR, SERVICE_NAMES, Settings, load_settings
from shared.events import Envelope
from shared.kafka_utils import delete_topics, topic_name

REPORT_DIR = LOCAL_DIR / "bench"


@dataclass
class Run:
    orders: int
    post_latency: list[float] = field(default_factory=list)
    posted_at: dict[str, float] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)  # accepted order -> how it must end
    ordered: dict[str, dict[str, int]] = field(default_factory=dict)
    # Every terminal event seen while following (an order may end before its POST has returned).
    terminal: dict[str, tuple[str, str | None, float]] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)  # why POSTs were finally refused
    shed: int = 0  # 503 "overloaded" answers, each retried after its Retry-After


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


COUNTERS = ("events_published_total", "mongo_commands_total")  # read from each service's /metrics


def stock(settings: Settings, headers: dict[str, str]) -> dict[str, dict[str, int]]:
    response = requests.get(settings.services["inventory"].url + "/inventory", headers=headers, timeout=10)
    response.raise_for_status()
    return {p["product_id"]: p for p in response.json()["products"]}


def restock(settings: Settings, current: dict[str, dict[str, int]], units: int, headers: dict[str, str]) -> None:
    """Top up every product the benchmark buys to ``units`` available, so repeated runs never sell out
    (a sold-out product fails orders fast and would flatter the figures)."""
    for product_id in CATALOGUE:
        missing = units - current.get(product_id, {}).get("available", 0)
        if missing > 0:
            url = f"{settings.services['inventory'].url}/inventory/{product_id}"
            requests.put(url, json={"quantity": missing}, headers=headers, timeout=10).raise_for_status()


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
            if event.event_type == "OrderCompleted":
                status, reason = "completed", None
            else:
                status, reason = "failed", event.data.get("reason")
            run.terminal.setdefault(event.order_id, (status, reason, time.monotonic()))
    finally:
        consumer.close()


@dataclass(frozen=True)
class Posted:
    order_id: str | None  # None when the order was not accepted
    shed: int  # 503 answers retried after their Retry-After
    refusal: str | None = None  # why it was not accepted


class Poster(Protocol):
    def post(self, url: str, *, json: dict, timeout: float) -> requests.Response: ...


def post_order(
    session: Poster, url: str, body: dict, shed_retries: int, sleep: Callable[[float], None] = time.sleep
) -> Posted:
    """POST one order; retry a 503 that carries Retry-After (nothing was written) at most
    ``shed_retries`` times, after waiting as asked. Anything but a 2xx at the end is a refusal."""
    shed = 0
    while True:
        try:
            response = session.post(url, json=body, timeout=30)
        except requests.RequestException as err:
            # It may have been written: posting again could place the order twice.
            return Posted(None, shed, type(err).__name__)
        wait = retry_after_s(response.status_code, response.headers)
        if wait is None or shed >= shed_retries:
            break
        shed += 1
        sleep(wait)
    if not 200 <= response.status_code < 300:
        refusal = f"status {response.status_code}"
        return Posted(None, shed, refusal + (f" after {shed} retries" if wait is not None else ""))
    try:
        return Posted(str(response.json()["order_id"]), shed)
    except (ValueError, KeyError, TypeError):
        return Posted(None, shed, f"status {response.status_code} without an order_id")


def post_orders(settings: Settings, run: Run, args: argparse.Namespace, headers: dict[str, str]) -> float:
    url = settings.services["order"].url + "/orders"
    rate = parse_rate(args.rate)
    local = threading.local()
    tally = threading.Lock()
    started = time.monotonic()
    products = sorted(CATALOGUE)

    def post(index: int) -> None:
        if rate:
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.headers.update(headers)
        chosen = random.sample(products, k=random.randint(1, 3))
        items = [{"product_id": p, "quantity": 1, "price": CATALOGUE[p]} for p in chosen]
        body = {
            "customer_id": f"bench-{uuid.uuid4().hex[:12]}",
            "items": items,
            "total_amount": round(sum(CATALOGUE[p] for p in chosen), 2),
        }
        declined = random.random() < args.declined
        if declined:
            body["card_details"] = {"number": DECLINED_CARD}
        sent = time.monotonic()
        posted = post_order(session, url, body, args.shed_retries)
        with tally:
            run.post_latency.append(time.monotonic() - sent)
            run.shed += posted.shed
            if posted.order_id is None:
                run.rejected[posted.refusal or "refused"] += 1
                return
        run.ordered[posted.order_id] = {p: 1 for p in chosen}
        run.expected[posted.order_id] = expected_outcome(declined)
        run.posted_at[posted.order_id] = sent

    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(post, range(run.orders)))
    return time.monotonic() - started


def bench(settings: Settings, args: argparse.Namespace, credentials: Credentials, roots: Roots | None = None) -> dict:
    """Run one benchmark against the stack described by ``settings``; return the figures.

    It calls as an admin (restocking, ordering as a checkout back end, scraping /metrics).
    ``roots`` finds the stack's processes; by default, the launcher's PID files."""
    headers = credentials.headers("ADMIN_KEY")
    fetch = functools.partial(http_get, headers=headers)
    table = PsutilProcessTable()
    if roots is None:
        roots = functools.partial(pid_file_roots, table)
        missing = [name for name in SERVICE_NAMES if not roots().get(name)]
        if missing:
            raise SystemExit(
                f"no live PID files for {', '.join(missing)} in {launcher.PID_DIR}: "
                "start the stack from this checkout (`make run`)"
            )
    urls = service_urls(settings)
    run = Run(args.orders)
    ready, stop = threading.Event(), threading.Event()
    follower = threading.Thread(target=follow_terminal_events, args=(settings, run, ready, stop), daemon=True)
    follower.start()
    if not ready.wait(30):
        raise SystemExit("could not subscribe to the terminal topics")
    time.sleep(1)
    restock(settings, stock(settings, headers), units=args.orders, headers=headers)
    stock_before = stock(settings, headers)
    try:
        counters_before = scrape(urls, COUNTERS, fetch)
    except MetricsUnavailable as err:
        raise SystemExit(f"cannot measure: {err}") from err
    usage = StackUsage(roots, table)
    usage.start()
    sampler = Sampler(usage)
    sampler.start()

    started = time.monotonic()
    post_seconds = post_orders(settings, run, args, headers)
    deadline = time.monotonic() + args.timeout
    while not all(o in run.terminal for o in run.expected) and time.monotonic() < deadline:
        time.sleep(0.2)
    ended = {o: run.terminal[o] for o in run.expected if o in run.terminal}
    last_terminal = max((t for *_, t in ended.values()), default=time.monotonic())
    elapsed = last_terminal - started
    settle_stock(settings, stock_before, args.timeout, headers)  # commits trail the terminal events
    sampler.stop.set()
    sampler.join()
    usage.sample()
    cpu = usage.cpu_seconds()
    stop.set()
    problems: list[str] = []
    if sampler.error:
        problems.append(f"CPU and RSS sampling stopped during the run: {sampler.error!r}")
    try:
        counters_after = scrape(urls, COUNTERS, fetch)
        moved = {
            counter: {s: counters_after[counter][s] - counters_before[counter][s] for s in urls} for counter in COUNTERS
        }
    except MetricsUnavailable as err:
        problems.append(f"cannot count Kafka messages and Mongo round trips: {err}")
        moved = None
    stock_after = stock(settings, headers)

    completed = [o for o, (status, *_) in ended.items() if status == "completed"]
    flow = [ended[o][-1] - run.posted_at[o] for o in ended]
    checks, check_problems = check_run(run, ended, stock_before, stock_after, args.timeout)
    problems = check_problems + problems
    accepted = max(1, len(run.ordered))
    mongo_by_service = moved["mongo_commands_total"] if moved else None
    return {
        "orders_posted": args.orders,
        "orders_accepted": len(run.ordered),
        "orders_rejected": sum(run.rejected.values()),
        "posts_shed_and_retried": run.shed,
        "orders_completed": len(completed),
        "orders_failed": len(ended) - len(completed),
        "post_rate_per_s": round(len(run.ordered) / post_seconds, 1),
        "completed_per_s": round(len(completed) / elapsed, 1) if elapsed > 0 else 0.0,
        "post_latency_ms": {q: round(percentile(run.post_latency, v) * 1000, 1) for q, v in QUANTILES},
        "post_to_terminal_ms": {q: round(percentile(flow, v) * 1000, 1) for q, v in QUANTILES},
        "cpu_ms_per_completed_order": round(cpu * 1000 / max(1, len(completed)), 2),
        "cpu_processes_measured": usage.processes_seen(),
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in usage.peak_rss.items()},
        "kafka_messages_per_order": (
            round(sum(moved["events_published_total"].values()) / accepted, 1) if moved else None
        ),
        "mongo_commands_per_order": round(sum(mongo_by_service.values()) / accepted, 1) if mongo_by_service else None,
        "mongo_commands_per_order_by_service": (
            {k: round(v / accepted, 1) for k, v in mongo_by_service.items()} if mongo_by_service else {}
        ),
        "checks": checks,
        "problems": problems,
    }


QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def settle_stock(
    settings: Settings, before: dict[str, dict[str, int]], timeout: float, headers: dict[str, str]
) -> None:
    """Wait (bounded) until no more stock is reserved than before the run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = stock(settings, headers)
        if all(now[p]["reserved"] <= before[p]["reserved"] for p in CATALOGUE):
            return
        time.sleep(0.5)


# -- checks: each reports how many things it checked, so a vacuous pass shows --------------------


def check_run(
    run: Run, ended: Mapping[str, tuple[str, str | None, float]], before: dict, after: dict, timeout: float
) -> tuple[dict[str, dict], list[str]]:
    """Check the run's POSTs, each order's outcome and timeliness, and the stock; return the
    checks (with what each counted) and the problems found."""
    checks: dict[str, dict] = {}
    problems: list[str] = []
    posted = len(run.ordered) + sum(run.rejected.values())
    checks["posts accepted"] = {"checked": posted, "failed": sum(run.rejected.values())}
    if not run.ordered:
        problems.append(f"no order was accepted ({posted} posted)")
    if run.rejected:
        reasons = ", ".join(f"{why} x{n}" for why, n in run.rejected.most_common())
        problems.append(f"{sum(run.rejected.values())} of {posted} POSTs were finally rejected: {reasons}")

    outcomes, wrong = check_outcomes(run.expected, {o: (status, reason) for o, (status, reason, _) in ended.items()})
    checks["ended as expected"] = outcomes
    if wrong:
        kinds = ", ".join(f"{kind} x{n}" for kind, n in outcomes["mismatches"].items())
        shown = "; ".join(wrong[:3]) + (f"; and {len(wrong) - 3} more" if len(wrong) > 3 else "")
        problems.append(f"{len(wrong)} of {outcomes['checked']} orders ended other than expected ({kinds}): {shown}")

    unfinished = [o for o in run.expected if o not in ended]
    checks["ended in time"] = {"checked": len(run.expected), "failed": len(unfinished), "timeout_s": timeout}
    if unfinished:
        problems.append(f"{len(unfinished)} of {len(run.expected)} orders did not end within {timeout:.0f}s")

    completed = [o for o, (status, *_) in ended.items() if status == "completed"]
    stock_problems = check_stock(before, after, run, completed)
    checks["stock adds up"] = {
        "checked": len(CATALOGUE),
        "failed": len({p.split(":", 1)[0] for p in stock_problems}),
        "units_sold": sum(sum(run.ordered[o].values()) for o in completed),
    }
    problems += stock_problems
    return checks, problems


def check_outcomes(
    expected: Mapping[str, str], ended: Mapping[str, tuple[str, str | None]]
) -> tuple[dict[str, Any], list[str]]:
    """Compare how each ended order ended with how it must end; orders still running are not checked."""
    by_expected: Counter[str] = Counter()
    mismatches: Counter[str] = Counter()
    wrong = []
    for order_id, want in expected.items():
        if order_id not in ended:
            continue
        by_expected[want] += 1
        problem = outcome_problem(order_id, want, *ended[order_id])
        if problem:
            wrong.append(problem)
            mismatches[f"{want} -> {outcome(*ended[order_id])}"] += 1
    check = {"checked": sum(by_expected.values()), "failed": len(wrong), "by_expected": dict(by_expected)}
    if mismatches:
        check["mismatches"] = dict(mismatches.most_common())
    return check, wrong


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


CHECKED = {
    "posts accepted": "POSTs",
    "ended as expected": "orders",
    "ended in time": "orders",
    "stock adds up": "products",
}


def describe_check(name: str, check: dict) -> str:
    """Say what a check counted and what it found, e.g. "200 orders checked (185 completed, ...): ok"."""
    extra = ""
    if check.get("by_expected"):
        extra = " (" + ", ".join(f"{n} {kind}" for kind, n in check["by_expected"].items()) + ")"
    elif "units_sold" in check:
        extra = f" ({check['units_sold']} units sold)"
    if not check["checked"]:
        verdict = "nothing checked"
    else:
        verdict = "ok" if check["failed"] == 0 else f"{check['failed']} wrong"
    return f"{check['checked']} {CHECKED[name]} checked{extra}: {verdict}"


def print_table(results: dict[str, dict]) -> None:
    def per_order(value: object) -> object:
        return "unknown" if value is None else value

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
        ("  measured over processes", lambda r: r["cpu_processes_measured"]),
        ("Kafka messages per order", lambda r: per_order(r["kafka_messages_per_order"])),
        ("Mongo round trips per order", lambda r: per_order(r["mongo_commands_per_order"])),
        (
            "  by service",
            lambda r: ", ".join(f"{k} {v}" for k, v in r["mongo_commands_per_order_by_service"].items()) or "unknown",
        ),
        ("peak RSS MB (max process)", lambda r: ", ".join(f"{k} {v}" for k, v in r["peak_rss_mb"].items())),
        *((f"check: {name}", lambda r, name=name: describe_check(name, r["checks"][name])) for name in CHECKED),
        ("problems", lambda r: "; ".join(r["problems"]) or "none"),
    ]
    names = list(results)
    print(f"{'':38}" + "".join(f"{n:>44}" for n in names))
    for label, value in rows:
        print(f"{label:38}" + "".join(f"{value(results[n])!s:>44}" for n in names))


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
            "AUTH_DATABASE": "bench_auth",
        }
        settings, children, credentials = launcher.start_fresh(env, replicas=count, timeout=90)
        try:
            time.sleep(5)  # let every worker join its group before measuring
            # Exactly the processes started here (and their gunicorn workers), nothing else on the box.
            results[f"{count} worker(s)"] = bench(settings, args, credentials, roots=children_roots(children))
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
    parser.add_argument(
        "--shed-retries", type=int, default=30, help="times one POST is retried after a 503 with Retry-After"
    )
    parser.add_argument("--compare-replicas", help="comma-separated worker counts, e.g. 1,3 (starts its own stack)")
    args = parser.parse_args(argv)

    if args.compare_replicas:
        results = compare_replicas([int(n) for n in args.compare_replicas.split(",")], args)
    else:
        settings = load_settings()
        results = {"this stack": bench(settings, args, from_local_files())}
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
