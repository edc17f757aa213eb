"""The benchmark's verdict: every way a run can be wrong is a problem, and each check counts."""

from __future__ import annotations

from collections import Counter

from load.bench import Run, check_run, describe_check
from load.shop import CATALOGUE, COMPLETED, DECLINED

STOCK = {p: {"available": 100, "reserved": 0, "sold": 0} for p in CATALOGUE}


def sold(units: dict[str, int]) -> dict:
    return {p: {"available": 100 - units.get(p, 0), "reserved": 0, "sold": units.get(p, 0)} for p in CATALOGUE}


def healthy_run() -> tuple[Run, dict]:
    run = Run(orders=3)
    run.ordered = {"a": {"mouse": 1}, "b": {"mouse": 1, "keyboard": 1}, "c": {"monitor": 1}}
    run.expected = {"a": COMPLETED, "b": COMPLETED, "c": DECLINED}
    ended = {"a": ("completed", None, 1.0), "b": ("completed", None, 1.0), "c": ("failed", "payment_declined", 1.0)}
    return run, ended


def test_a_healthy_run_has_no_problems_and_every_check_counted_something():
    run, ended = healthy_run()
    checks, problems = check_run(run, ended, STOCK, sold({"mouse": 2, "keyboard": 1}), timeout=60)
    assert problems == []
    assert checks["posts accepted"] == {"checked": 3, "failed": 0}
    assert checks["ended as expected"] == {"checked": 3, "failed": 0, "by_expected": {COMPLETED: 2, DECLINED: 1}}
    assert checks["ended in time"] == {"checked": 3, "failed": 0, "timeout_s": 60}
    assert checks["stock adds up"] == {"checked": 5, "failed": 0, "units_sold": 3}
    assert describe_check("ended as expected", checks["ended as expected"]) == (
        "3 orders checked (2 completed, 1 failed/payment_declined): ok"
    )
    assert describe_check("stock adds up", checks["stock adds up"]) == "5 products checked (3 units sold): ok"


def test_no_accepted_order_is_a_problem_and_shows_as_nothing_checked():
    run = Run(orders=2, rejected=Counter({"status 500": 2}))
    checks, problems = check_run(run, {}, STOCK, STOCK, timeout=60)
    assert "no order was accepted (2 posted)" in problems
    assert "2 of 2 POSTs were finally rejected: status 500 x2" in problems
    assert describe_check("ended as expected", checks["ended as expected"]) == "0 orders checked: nothing checked"


def test_one_finally_rejected_post_fails_the_run():
    run, ended = healthy_run()
    run.rejected["status 503 after 30 retries"] += 1
    checks, problems = check_run(run, ended, STOCK, sold({"mouse": 2, "keyboard": 1}), timeout=60)
    assert problems == ["1 of 4 POSTs were finally rejected: status 503 after 30 retries x1"]
    assert checks["posts accepted"] == {"checked": 4, "failed": 1}


def test_an_order_ending_other_than_expected_fails_the_run_even_when_the_stock_adds_up():
    run, ended = healthy_run()
    ended["b"] = ("failed", "payment_declined", 1.0)  # a normal order failed: its stock was released
    checks, problems = check_run(run, ended, STOCK, sold({"mouse": 1}), timeout=60)
    assert problems == [
        "1 of 3 orders ended other than expected (completed -> failed/payment_declined x1): "
        "order b ended failed/payment_declined, expected completed"
    ]
    assert checks["ended as expected"]["failed"] == 1
    assert describe_check("ended as expected", checks["ended as expected"]) == (
        "3 orders checked (2 completed, 1 failed/payment_declined): 1 wrong"
    )


def test_an_order_not_ended_in_time_fails_the_run():
    run, ended = healthy_run()
    del ended["c"]
    checks, problems = check_run(run, ended, STOCK, sold({"mouse": 2, "keyboard": 1}), timeout=60)
    assert problems == ["1 of 3 orders did not end within 60s"]
    assert checks["ended in time"] == {"checked": 3, "failed": 1, "timeout_s": 60}
    assert checks["ended as expected"]["checked"] == 2


def test_stock_that_does_not_add_up_fails_the_run():
    run, ended = healthy_run()
    after = sold({"mouse": 2, "keyboard": 1})
    after["monitor"]["reserved"] = 1  # the declined order's hold was never released
    checks, problems = check_run(run, ended, STOCK, after, timeout=60)
    assert problems == ["monitor: reserved 0 -> 1"]
    assert checks["stock adds up"]["failed"] == 1
