"""How each order must end, and the benchmark's check of it."""

from __future__ import annotations

from load.bench import check_outcomes
from load.shop import COMPLETED, DECLINED, expected_outcome, outcome_mismatch, outcome_problem, retry_after_s


def test_an_order_with_the_declined_card_must_fail_with_payment_declined_and_any_other_must_complete():
    assert expected_outcome(declined_card=True) == DECLINED == "failed/payment_declined"
    assert expected_outcome(declined_card=False) == COMPLETED == "completed"


def test_an_order_ending_as_expected_is_no_problem():
    assert outcome_problem("o-1", COMPLETED, "completed") is None
    assert outcome_problem("o-2", DECLINED, "failed", "payment_declined") is None


def test_a_normal_order_that_failed_is_a_problem_naming_the_order_and_both_outcomes():
    problem = outcome_problem("o-1", COMPLETED, "failed", "payment_declined")
    assert problem == "order o-1 ended failed/payment_declined, expected completed"


def test_a_declined_card_order_that_completed_or_failed_for_another_reason_is_a_problem():
    assert (
        outcome_problem("o-1", DECLINED, "completed") == "order o-1 ended completed, expected failed/payment_declined"
    )
    assert "failed/payment_timeout" in outcome_problem("o-2", DECLINED, "failed", "payment_timeout")
    assert "failed/no reason" in outcome_problem("o-3", DECLINED, "failed", None)


def test_the_mismatch_without_the_order_id_lets_locust_count_failures_by_kind():
    assert outcome_mismatch(COMPLETED, "failed", "payment_declined") == (
        "ended failed/payment_declined, expected completed"
    )
    assert outcome_mismatch(DECLINED, "failed", "payment_declined") is None


def test_check_outcomes_counts_each_kind_it_checked_and_lists_the_wrong_ones():
    expected = {"a": COMPLETED, "b": COMPLETED, "c": DECLINED, "d": DECLINED, "still-running": COMPLETED}
    ended = {
        "a": ("completed", None),
        "b": ("failed", "payment_declined"),  # wrong: must complete
        "c": ("failed", "payment_declined"),
        "d": ("completed", None),  # wrong: the card is declined
        "not-ours": ("failed", "out_of_stock"),  # another client's order: not checked
    }
    check, wrong = check_outcomes(expected, ended)
    assert check == {
        "checked": 4,
        "failed": 2,
        "by_expected": {COMPLETED: 2, DECLINED: 2},
        "mismatches": {"completed -> failed/payment_declined": 1, "failed/payment_declined -> completed": 1},
    }
    assert wrong == [
        "order b ended failed/payment_declined, expected completed",
        "order d ended completed, expected failed/payment_declined",
    ]


def test_check_outcomes_of_no_ended_order_checks_nothing_rather_than_passing_silently():
    check, wrong = check_outcomes({"a": COMPLETED}, {})
    assert check["checked"] == 0
    assert wrong == []


def test_only_a_503_with_a_number_in_retry_after_is_retried():
    assert retry_after_s(503, {"Retry-After": "5"}) == 5.0
    assert retry_after_s(503, {}) is None
    assert retry_after_s(503, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}) is None
    assert retry_after_s(500, {"Retry-After": "5"}) is None
    assert retry_after_s(201, {}) is None
