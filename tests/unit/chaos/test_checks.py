"""The chaos suite's invariants catch what they name, and never pass on nothing (made-up evidence)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from tests.chaos import checks
from tests.chaos.checks import OrderEvents, Placed

COMPLETED = {"status": "completed"}
DECLINED = {"status": "failed", "failure_reason": "payment_declined"}
CANCELLED = {"status": "failed", "failure_reason": "cancelled"}
OUT_OF_STOCK = {"status": "failed", "failure_reason": "out_of_stock"}
TIMED_OUT = {"status": "failed", "failure_reason": "payment_timeout"}
IGNORED_CANCEL = {"steps": [{"step": "OrderCancelRequested", "status": "ignored"}]}


def placed(order_id: str = "o-1", kind: str = "complete", cancel: str = "", items=None, total=10.0) -> Placed:
    return Placed(order_id, f"c-{order_id}", kind, items or {"mouse": 1}, total, cancel)


def test_checks_over_nothing_fail_so_a_vacuous_pass_shows():
    assert not checks.check_terminal([], {}).ok
    assert not checks.check_money([], {}, {}).ok
    assert checks.check_terminal([], {}).detail == "nothing to check"


def test_every_order_asked_for_must_be_accepted():
    assert checks.check_accepted(3, 3, []).ok
    assert not checks.check_accepted(3, 2, []).ok
    assert not checks.check_accepted(3, 3, ["order 2: answered 400"]).ok


def test_a_driver_error_fails_the_run():
    assert checks.check_driver([], 10).ok
    assert not checks.check_driver(["order 4: ApiError: 500"], 10).ok


@pytest.mark.parametrize(
    ("kind", "final", "ok"),
    [
        ("complete", COMPLETED, True),
        ("complete", TIMED_OUT, False),
        ("declined", DECLINED, True),
        ("declined", COMPLETED, False),
        ("out_of_stock", OUT_OF_STOCK, True),
        ("out_of_stock", DECLINED, False),
    ],
)
def test_each_kind_must_end_as_it_says(kind, final, ok):
    result, _tally = checks.check_outcomes([placed(kind=kind)], {"o-1": final}, {})
    assert result.ok is ok


def test_an_accepted_cancel_ends_cancelled_or_is_seen_ignored_by_the_saga():
    order = placed(cancel="accepted")
    assert checks.check_outcomes([order], {"o-1": CANCELLED}, {})[0].ok
    late, tally = checks.check_outcomes([order], {"o-1": COMPLETED}, {"o-1": IGNORED_CANCEL})
    assert late.ok
    assert tally == Counter({"cancel came too late (saga had decided)": 1})
    assert not checks.check_outcomes([order], {"o-1": COMPLETED}, {"o-1": {"steps": []}})[0].ok


def test_a_cancel_refused_as_too_late_leaves_the_kind_s_outcome():
    order = placed(kind="declined", cancel="too_late")
    assert checks.check_outcomes([order], {"o-1": DECLINED}, {})[0].ok
    assert not checks.check_outcomes([order], {"o-1": CANCELLED}, {})[0].ok


def stock(available, reserved=0, sold=0, holds=None):
    return {"available": available, "reserved": reserved, "sold": sold, "holds": holds or {}}


@pytest.mark.parametrize(
    ("after", "ok"),
    [
        (stock(8, sold=2), True),
        (stock(9, sold=2), False),  # a unit appeared
        (stock(7, reserved=1, sold=2), False),  # left reserved
        (stock(8, sold=2, holds={"res_x": 1}), False),  # a hold left behind
        (stock(9, sold=1), False),  # a completed order's unit not sold
    ],
)
def test_stock_is_conserved_and_sold_matches_completed_orders(after, ok):
    orders = [placed("o-1", items={"mouse": 2}), placed("o-2", kind="declined", items={"mouse": 5})]
    finals = {"o-1": COMPLETED, "o-2": DECLINED}
    assert checks.check_stock({"mouse": stock(10)}, {"mouse": after}, orders, finals, "test").ok is ok


def book(charges, refunds, net):
    return {"charges": charges, "refunds": refunds, "net": net}


@pytest.mark.parametrize(
    ("final", "entry", "ok"),
    [
        (COMPLETED, book(1, 0, 10.0), True),
        (COMPLETED, book(2, 1, 10.0), True),  # a late duplicate given back
        (COMPLETED, book(2, 0, 20.0), False),  # charged twice
        (COMPLETED, book(1, 0, 9.0), False),  # the wrong amount
        (COMPLETED, None, False),  # never charged
        (DECLINED, None, True),
        (CANCELLED, book(1, 1, 0.0), True),
        (CANCELLED, book(1, 0, 10.0), False),  # kept the money of a failed order
    ],
)
def test_the_ledger_shows_one_charge_kept_per_completed_order(final, entry, ok):
    books = {"o-1": entry} if entry else {}
    assert checks.check_money([placed()], {"o-1": final}, books).ok is ok


def test_sources_must_agree_and_exactly_one_means_one():
    assert checks.check_agree("x", {"o-1": 1}, {"o-1": 1}).ok
    assert not checks.check_agree("x", {"o-1": 1}, {"o-1": 2}).ok
    assert not checks.check_agree("x", {"o-1": 1}, {}).ok
    assert checks.check_exactly_one("n", ["o-1"], {"o-1": 1}).ok
    assert not checks.check_exactly_one("n", ["o-1"], {"o-1": 2}).ok
    assert not checks.check_exactly_one("n", ["o-1"], {}).ok


def kafka(*events: tuple[str, str], reason: str | None = None) -> OrderEvents:
    seen = OrderEvents()
    for event_type, event_id in events:
        data = {"reason": reason} if event_type == "OrderFailed" else {}
        seen.add(event_type, event_id, data, "2026-01-01T00:00:00.000Z")
    return seen


@pytest.mark.parametrize(
    ("seen", "final", "ok"),
    [
        (kafka(("OrderCreated", "a"), ("OrderCompleted", "b"), ("OrderCompleted", "b")), COMPLETED, True),
        (kafka(("OrderCreated", "a"), ("OrderCompleted", "b"), ("OrderCompleted", "c")), COMPLETED, False),
        (
            kafka(("OrderCreated", "a"), ("PaymentCompleted", "p"), ("PaymentCompleted", "q"), ("OrderCompleted", "b")),
            COMPLETED,
            False,
        ),
        (kafka(("OrderCreated", "a")), COMPLETED, False),
        (kafka(("OrderCreated", "a"), ("OrderFailed", "b"), reason="payment_declined"), DECLINED, True),
        (kafka(("OrderCreated", "a"), ("OrderFailed", "b"), reason="payment_timeout"), DECLINED, False),
        (kafka(("OrderCreated", "a"), ("OrderFailed", "b"), ("OrderCompleted", "c"), reason="x"), COMPLETED, False),
        (kafka(("OrderCompleted", "b")), COMPLETED, False),
    ],
)
def test_kafka_holds_one_creation_and_one_end_per_order_matching_the_api(seen, final, ok):
    assert checks.check_kafka([placed()], {"o-1": final}, {"o-1": seen}).ok is ok


def test_timelines_need_the_end_and_no_step_twice():
    finals = {"o-1": COMPLETED}
    assert checks.check_timelines([placed()], finals, {"o-1": ["OrderCreated", "OrderCompleted"]}).ok
    assert not checks.check_timelines([placed()], finals, {"o-1": ["OrderCreated"]}).ok
    assert not checks.check_timelines([placed()], finals, {"o-1": ["OrderCompleted", "OrderCompleted"]}).ok


def test_every_poison_must_reach_the_dlq_and_nothing_else():
    assert checks.check_dead_letters({"p1", "p2"}, ["p1", "p2", "p2"], "t").ok
    assert not checks.check_dead_letters({"p1", "p2"}, ["p1"], "t").ok
    assert not checks.check_dead_letters({"p1"}, ["p1", "o-9"], "t").ok


@dataclass
class FakeFault:
    name: str
    problem: str = ""


def test_a_planned_fault_that_did_not_happen_fails():
    assert checks.check_faults([FakeFault("kill -9 order")]).ok
    assert not checks.check_faults([FakeFault("kill -9 broker", "our kafka server was not running")]).ok


def test_sagas_in_flight_are_those_begun_and_not_ended():
    events = {
        "a": kafka(("OrderCreated", "1")),
        "b": OrderEvents(created_at="2026-01-01T00:00:01.000Z", ended_at="2026-01-01T00:00:05.000Z"),
        "c": OrderEvents(created_at="2026-01-01T00:00:09.000Z"),
    }
    assert checks.in_flight_at("2026-01-01T00:00:03.000Z", events) == 2  # a (never ended) and b
    assert checks.in_flight_at("2026-01-01T00:00:06.000Z", events) == 1
