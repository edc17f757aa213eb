"""The chaos suite's invariants, as pure functions of what the run placed and what the witnesses saw.

Each check returns a ``Check``: its name, whether it held, how many things it looked at (so a
pass over nothing is visible) and what broke. The witnesses are read elsewhere (witnesses.py);
here nothing does I/O, so every check is tested on made-up evidence (tests/unit/chaos).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The outcome each kind of order must end with when nobody cancels it.
EXPECTED: dict[str, tuple[str, str | None]] = {
    "complete": ("completed", None),
    "out_of_stock": ("failed", "out_of_stock"),
    "declined": ("failed", "payment_declined"),
}
CANCELLED = ("failed", "cancelled")
# Saga steps an order may go through at most once: a second one (another event id) is a step taken twice.
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
TERMINAL_EVENTS = ("OrderCompleted", "OrderFailed")


@dataclass
class Placed:
    """An order the driver had accepted (201 or 200), with what it must end as."""

    order_id: str
    customer_id: str
    kind: str
    items: dict[str, int]
    total: float
    # "" never asked; "accepted" the order service took the cancel (202); "too_late" it was finished (409).
    cancel: str = ""

    @property
    def expected(self) -> tuple[str, str | None]:
        return EXPECTED[self.kind]


@dataclass
class Check:
    name: str
    ok: bool
    checked: int
    detail: str = ""


@dataclass
class OrderEvents:
    """What Kafka holds about one order: distinct event ids per type, and how often each id was seen."""

    ids: dict[str, set[str]] = field(default_factory=dict)
    copies: Counter[str] = field(default_factory=Counter)
    terminal_reason: str | None = None
    created_at: str | None = None
    ended_at: str | None = None

    def add(self, event_type: str, event_id: str, data: Mapping[str, Any], occurred_at: str) -> None:
        self.ids.setdefault(event_type, set()).add(event_id)
        self.copies[event_id] += 1
        if event_type == "OrderCreated":
            self.created_at = min(self.created_at or occurred_at, occurred_at)
        if event_type in TERMINAL_EVENTS:
            self.ended_at = min(self.ended_at or occurred_at, occurred_at)
            if event_type == "OrderFailed":
                self.terminal_reason = data.get("reason")

    def count(self, event_type: str) -> int:
        return len(self.ids.get(event_type, ()))


def _result(name: str, checked: int, problems: Sequence[str]) -> Check:
    detail = f"{len(problems)} wrong: " + "; ".join(problems[:5]) if problems else ""
    return Check(name, not problems and checked > 0, checked, detail or ("nothing to check" if not checked else ""))


def outcome(order: Mapping[str, Any]) -> tuple[str, str | None]:
    status = order.get("status")
    return (str(status), None if status == "completed" else order.get("failure_reason"))


def check_accepted(asked: int, placed: int, refused: Sequence[str]) -> Check:
    """Every order asked for was accepted (a shed 503 or a crashed service is retried, not given up)."""
    problems = [*refused] + ([f"asked {asked}, accepted {placed}"] if placed != asked else [])
    return _result("every order asked for was accepted", asked, problems)


def check_driver(errors: Sequence[str], calls: int) -> Check:
    """No 4xx, no 5xx other than a retried 503, no exception in any driver thread."""
    return _result("driver saw no 4xx/5xx (but retried 503s) and no exception", calls, errors)


def check_terminal(placed: Sequence[Placed], finals: Mapping[str, Mapping[str, Any]]) -> Check:
    missing = [p.order_id for p in placed if p.order_id not in finals]
    return _result("every accepted order is terminal", len(placed), [f"{o} not terminal" for o in missing])


def check_outcomes(
    placed: Sequence[Placed], finals: Mapping[str, Mapping[str, Any]], flows: Mapping[str, Mapping[str, Any]]
) -> tuple[Check, Counter[str]]:
    """Each order ended as its kind says; a cancel the order service took (202) ends it ``cancelled``
    unless the saga had already decided (then the flow shows the cancel ignored); a cancel refused
    with 409 came after the end, so the kind's outcome stands."""
    problems, tally = [], Counter[str]()
    for p in placed:
        if p.order_id not in finals:
            continue
        got, want = outcome(finals[p.order_id]), p.expected
        if p.cancel == "accepted" and got == CANCELLED:
            tally["cancelled in time"] += 1
        elif p.cancel == "accepted" and got == want:
            if _cancel_ignored(flows.get(p.order_id, {})):
                tally["cancel came too late (saga had decided)"] += 1
            else:
                problems.append(f"{p.order_id} ({p.kind}, cancel 202) ended {got} but the saga never saw the cancel")
        elif got == want:
            tally[f"{p.kind}{' (cancel refused 409)' if p.cancel == 'too_late' else ''}"] += 1
        else:
            cancel = f", cancel {p.cancel}" if p.cancel else ""
            problems.append(f"{p.order_id} ({p.kind}{cancel}) ended {got}, expected {want}")
    return _result("every order ended as its kind says", len(finals), problems), tally


def _cancel_ignored(flow: Mapping[str, Any]) -> bool:
    return any(s.get("step") == "OrderCancelRequested" and s.get("status") == "ignored" for s in flow.get("steps", []))


def check_stock(
    initial: Mapping[str, Mapping[str, int]],
    final: Mapping[str, Mapping[str, Any]],
    placed: Sequence[Placed],
    finals: Mapping[str, Mapping[str, Any]],
    source: str,
) -> Check:
    """Per product: nothing made or lost, nothing left reserved or held, sold moved by what completed orders bought."""
    bought: Counter[str] = Counter()
    for p in placed:
        if finals.get(p.order_id, {}).get("status") == "completed":
            bought.update(p.items)
    problems = []
    for product, before in initial.items():
        after = final.get(product)
        if after is None:
            problems.append(f"{product} is gone")
            continue
        total_before = before["available"] + before["reserved"] + before["sold"]
        total_after = after["available"] + after["reserved"] + after["sold"]
        if total_after != total_before:
            problems.append(f"{product}: {total_before} units before, {total_after} after")
        if after["reserved"] or after.get("holds"):
            problems.append(f"{product}: {after['reserved']} still reserved, holds {after.get('holds') or {}}")
        if after["available"] < 0:
            problems.append(f"{product}: available {after['available']}")
        if after["sold"] - before["sold"] != bought[product]:
            problems.append(
                f"{product}: sold +{after['sold'] - before['sold']}, completed orders bought {bought[product]}"
            )
    return _result(f"stock conserved, nothing reserved, never oversold ({source})", len(initial), problems)


def check_money(
    placed: Sequence[Placed], finals: Mapping[str, Mapping[str, Any]], books: Mapping[str, Mapping[str, float]]
) -> Check:
    """The gateway's own ledger: a completed order was charged its total exactly once, net; a failed one nothing."""
    problems = []
    for p in placed:
        if p.order_id not in finals:
            continue
        book = books.get(p.order_id, {"charges": 0, "refunds": 0, "net": 0.0})
        kept = book["charges"] - book["refunds"]
        if finals[p.order_id]["status"] == "completed":
            if kept != 1 or round(book["net"] - p.total, 2) != 0:
                problems.append(f"{p.order_id} completed: {_book(book)}, total {p.total}")
        elif kept != 0 or book["net"] != 0:
            problems.append(f"{p.order_id} failed: {_book(book)}")
    return _result("gateway ledger: one charge kept per completed order, none on failed", len(finals), problems)


def _book(book: Mapping[str, float]) -> str:
    return f"{book['charges']} charges, {book['refunds']} refunds, net {book['net']}"


def check_agree(name: str, expected: Mapping[str, Any], witnessed: Mapping[str, Any]) -> Check:
    """Two sources say the same per order (for example the payment API and the gateway ledger)."""
    problems = [
        f"{key}: {expected[key]!r} vs {witnessed.get(key)!r}" for key in expected if expected[key] != witnessed.get(key)
    ]
    return _result(name, len(expected), problems)


def check_exactly_one(name: str, order_ids: Iterable[str], counts: Mapping[str, int]) -> Check:
    ids = list(order_ids)
    problems = [f"{o}: {counts.get(o, 0)}" for o in ids if counts.get(o, 0) != 1]
    return _result(name, len(ids), problems)


def check_kafka(
    placed: Sequence[Placed], finals: Mapping[str, Mapping[str, Any]], events: Mapping[str, OrderEvents]
) -> Check:
    """Kafka, read from the beginning: one OrderCreated and one terminal event per order, matching the
    order's status, and no saga step under two event ids (redelivered copies of one id are fine)."""
    problems = []
    for p in placed:
        if p.order_id not in finals:
            continue
        seen = events.get(p.order_id, OrderEvents())
        status, reason = outcome(finals[p.order_id])
        twice = [t for t in SINGLE_STEPS if seen.count(t) > 1]
        if twice:
            problems.append(f"{p.order_id}: {', '.join(twice)} under two event ids")
        if seen.count("OrderCreated") != 1:
            problems.append(f"{p.order_id}: {seen.count('OrderCreated')} OrderCreated")
        ended = [t for t in TERMINAL_EVENTS if seen.count(t)]
        want = "OrderCompleted" if status == "completed" else "OrderFailed"
        if ended != [want] or (status == "failed" and seen.terminal_reason != reason):
            problems.append(f"{p.order_id}: topics say {ended} {seen.terminal_reason}, the API {status} {reason}")
    return _result("Kafka: one OrderCreated and one terminal event per order, no step twice", len(finals), problems)


def check_timelines(placed: Sequence[Placed], finals: Mapping[str, Any], timelines: Mapping[str, list[str]]) -> Check:
    """Monitoring's timeline of each order holds its terminal event and no saga step twice."""
    problems = []
    for p in placed:
        if p.order_id not in finals:
            continue
        counts = Counter(timelines.get(p.order_id, []))
        twice = [t for t in SINGLE_STEPS if counts[t] > 1]
        if twice:
            problems.append(f"{p.order_id}: {', '.join(twice)} twice")
        if not any(counts[t] for t in TERMINAL_EVENTS):
            problems.append(f"{p.order_id}: no terminal event in the timeline")
    return _result("monitoring timelines: terminal event present, no saga step twice", len(finals), problems)


def check_dead_letters(injected: set[str], keys: Sequence[str], source: str) -> Check:
    """Every injected poison message reached the DLQ, and nothing else did."""
    present = set(keys)
    problems = [f"poison {k} missing" for k in sorted(injected - present)]
    problems += [f"unexplained entry key={k!r}" for k in sorted(present - injected, key=str)]
    return _result(f"DLQ ({source}) holds every injected poison and nothing else", len(injected), problems)


def check_faults(faults: Sequence[Any]) -> Check:
    """Every fault planned happened: something was killed, and it came back."""
    problems = [f"{f.name}: {f.problem}" for f in faults if f.problem]
    return _result("every planned fault happened and recovered", len(faults), problems)


def in_flight_at(moment: str, events: Mapping[str, OrderEvents]) -> int:
    """Sagas begun (OrderCreated) but not ended (terminal event) at ``moment`` (ISO time, UTC)."""
    return sum(1 for e in events.values() if e.created_at and e.created_at <= moment < (e.ended_at or "9999"))
