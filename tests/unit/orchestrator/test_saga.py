"""The pure saga state machine: transitions, emitted events and deliberate handling of odd orderings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.orchestrator import saga, transitions
from services.orchestrator.domain import InvalidEventData
from services.orchestrator.saga import Context, SagaState, Timeouts, Transition
from shared.events import Envelope
from tests.unit.orchestrator.fakes import T0, order_created, reply

TIMEOUTS = Timeouts(payment=timedelta(seconds=60), order=timedelta(seconds=300))
OID = "o-1"


def ctx(at_s: float = 0) -> Context:
    return Context(T0 + timedelta(seconds=at_s), TIMEOUTS)


def run(*events: Envelope, at_s: float = 0) -> tuple[SagaState, list[Envelope]]:
    """Start a saga with OrderCreated, apply the replies and return it with every event it emitted."""
    started = saga.start(order_created(OID), ctx(at_s))
    current, emitted = started.saga, list(started.events)
    for event in events:
        step = transitions.apply(current, event, ctx(at_s))
        current, emitted = step.saga, emitted + list(step.events)
    return current, emitted


def types(events: list[Envelope] | tuple[Envelope, ...]) -> list[str]:
    return [e.event_type for e in events]


def step_log(current: SagaState) -> list[tuple[str, str]]:
    return [(s.step, s.status) for s in current.steps]


def test_a_valid_order_is_validated_and_its_stock_reserved() -> None:
    started = saga.start(order_created(OID), ctx())

    assert started.saga.state == "reserving"
    assert started.saga.order_deadline == T0 + timedelta(seconds=300)
    assert types(started.events) == ["OrderValidated", "ReserveInventory"]
    validated, reserve = started.events
    assert validated.data == {"total_amount": 25.5}
    assert reserve.data == {
        "reservation_id": f"res_{OID}",
        "items": [
            {"product_id": "p-1", "quantity": 2, "price": 10.0},
            {"product_id": "p-2", "quantity": 1, "price": 5.5},
        ],
    }
    assert all(e.source == "orchestrator" and e.customer_id == "cust-1" for e in started.events)
    assert reserve.causation_id == started.saga.handled_events[0]


def test_the_happy_path_emits_exactly_the_right_events_in_order() -> None:
    current, emitted = run(reply("InventoryReserved", OID), reply("PaymentCompleted", OID))

    assert current.state == "completed"
    assert types(emitted) == [
        "OrderValidated",
        "ReserveInventory",
        "PaymentRequested",
        "CommitInventory",
        "OrderCompleted",
        "NotificationRequested",
    ]
    by_type = {e.event_type: e.data for e in emitted}
    assert by_type["PaymentRequested"] == {
        "payment_id": f"pay_{OID}",
        "amount": 25.5,
        "payment_method": "credit_card",
        "payment_method_token": "pm_card1",
        "card_brand": "visa",
        "card_last4": "1111",
        "customer_id": "cust-1",
    }
    assert by_type["CommitInventory"] == {"reservation_id": f"res_{OID}"}
    assert by_type["OrderCompleted"] == {
        "payment_id": f"pay_{OID}",
        "reservation_id": f"res_{OID}",
        "total_amount": 25.5,
    }
    assert by_type["NotificationRequested"]["type"] == "order_confirmation"
    assert by_type["NotificationRequested"]["customer_email"] == "ann@example.com"
    assert step_log(current) == [
        ("validate_order", "completed"),
        ("reserve_inventory", "started"),
        ("reserve_inventory", "completed"),
        ("take_payment", "started"),
        ("take_payment", "completed"),
        ("commit_inventory", "started"),
        ("notify_customer", "completed"),
    ]


def test_the_saga_keeps_the_vaulted_card_token_brand_and_last_four_only() -> None:
    current, _ = run(reply("InventoryReserved", OID))

    assert current.state == "awaiting_payment"
    order = current.order
    assert (order.payment_method_token, order.card_brand, order.card_last4) == ("pm_card1", "visa", "1111")
    assert current.payment_deadline == T0 + timedelta(seconds=60)


@pytest.mark.parametrize(
    ("replies", "reason"),
    [
        ([reply("InventoryReservationFailed", OID, reason="out_of_stock")], "out_of_stock"),
        ([reply("OrderCancelRequested", OID), reply("InventoryReleased", OID)], "cancelled"),
        (
            [reply("InventoryReserved", OID), reply("PaymentFailed", OID), reply("InventoryReleased", OID)],
            "payment_declined",
        ),
    ],
)
def test_a_failed_order_names_its_card_token_so_the_vault_deletes_it(replies: list[Envelope], reason: str) -> None:
    current, emitted = run(*replies)
    [failed] = [e for e in emitted if e.event_type == "OrderFailed"]
    assert (current.failure_reason, failed.data["reason"]) == (reason, reason)
    assert failed.data["payment_method_token"] == "pm_card1"


def test_an_invalid_order_and_a_timed_out_one_name_their_card_token_too() -> None:
    invalid = saga.start(order_created(OID, total_amount=1.0), ctx())
    assert invalid.events[0].data["payment_method_token"] == "pm_card1"
    current, _ = run(reply("InventoryReserved", OID))
    timed_out = saga.on_timeout(current, ctx(61))
    released = transitions.apply(timed_out.saga, reply("InventoryReleased", OID), ctx(62))
    [failed] = [e for e in released.events if e.event_type == "OrderFailed"]
    assert (failed.data["reason"], failed.data["payment_method_token"]) == ("payment_timeout", "pm_card1")


def test_an_order_without_a_card_fails_without_a_token() -> None:
    started = saga.start(
        order_created(OID, payment_method_token=None, card_brand=None, card_last4=None, items=[]), ctx()
    )
    assert "payment_method_token" not in started.events[0].data


@pytest.mark.parametrize(
    "card",
    [
        {"payment_method_token": None, "card_details": {"number": "4111111111111111"}, "card_last4": "1111"},
        {"payment_method_token": "not a token", "card_brand": "visa", "card_last4": "1111"},
    ],
)
def test_a_card_number_in_clear_or_a_malformed_token_is_withdrawn_not_charged(card: dict[str, Any]) -> None:
    started = saga.start(order_created(OID, **card), ctx())
    current, emitted = started.saga, list(started.events)
    step = transitions.apply(current, reply("InventoryReserved", OID), ctx())
    [payment] = [e for e in step.events if e.event_type == "PaymentRequested"]
    assert payment.data["payment_method_token"] == "pm_withdrawn"
    assert "4111111111111111" not in repr(step.saga) + repr(emitted) + repr(step.events)


@pytest.mark.parametrize(
    "data",
    [
        {"items": []},
        {"items": [{"product_id": "p-1", "quantity": 0, "price": 10.0}], "total_amount": 0},
        {"items": [{"product_id": "p-1", "quantity": "2", "price": 10.0}], "total_amount": 20.0},
        {"items": [{"product_id": "p-1", "quantity": True, "price": 10.0}], "total_amount": 10.0},
        {"items": [{"product_id": "p-1", "quantity": 1.5, "price": 10.0}], "total_amount": 15.0},
        {"items": [{"product_id": "p-1", "quantity": 1, "price": 0}], "total_amount": 0},
        {"items": [{"product_id": "p-1", "quantity": 1, "price": -3.0}], "total_amount": -3.0},
        {"items": [{"quantity": 1, "price": 3.0}], "total_amount": 3.0},
        {"items": "p-1"},
        {"total_amount": 25.49},
        {"total_amount": "25.50"},
        {"customer_id": None},
        {"customer_id": "  "},
        {"payment_method": None},
    ],
)
def test_an_invalid_order_fails_as_invalid_order_with_a_notification(data: dict[str, Any]) -> None:
    started = saga.start(order_created(OID, **data), ctx())

    assert started.saga.state == "failed"
    assert started.saga.failure_reason == "invalid_order"
    assert types(started.events) == ["OrderFailed", "NotificationRequested"]
    failed, notice = started.events
    assert failed.data["reason"] == "invalid_order"
    assert failed.data["detail"] == started.saga.failure_detail
    assert notice.data["type"] == "order_failed"
    assert saga.next_deadline(started.saga, TIMEOUTS) is None


def test_a_total_that_matches_to_the_cent_is_valid_despite_float_noise() -> None:
    items = [{"product_id": "p-1", "quantity": 3, "price": 0.1}, {"product_id": "p-2", "quantity": 7, "price": 19.99}]
    started = saga.start(order_created(OID, items=items, total_amount=140.23), ctx())

    assert started.saga.state == "reserving"


def test_out_of_stock_fails_the_order_with_the_inventory_detail() -> None:
    current, emitted = run(reply("InventoryReservationFailed", OID))

    assert current.state == "failed"
    assert current.failure_reason == "out_of_stock"
    assert types(emitted)[2:] == ["OrderFailed", "NotificationRequested"]
    assert emitted[2].data == {
        "reason": "out_of_stock",
        "detail": "p-1: 1 available, 2 requested",
        "payment_method_token": "pm_card1",
    }
    assert saga.next_deadline(current, TIMEOUTS) is None


def test_an_unknown_product_reported_by_inventory_fails_as_invalid_order() -> None:
    current, _ = run(reply("InventoryReservationFailed", OID, reason="invalid_order", detail="unknown product p-9"))

    assert (current.state, current.failure_reason, current.failure_detail) == (
        "failed",
        "invalid_order",
        "unknown product p-9",
    )


def test_a_declined_payment_fails_the_order_only_after_the_stock_is_released() -> None:
    declined, emitted = run(reply("InventoryReserved", OID), reply("PaymentFailed", OID))

    assert declined.state == "compensating"
    assert declined.failure_reason == "payment_declined"
    assert types(emitted)[-1] == "ReleaseInventory"
    assert emitted[-1].data == {"reservation_id": f"res_{OID}", "reason": "payment_declined"}
    assert "OrderFailed" not in types(emitted)

    released = transitions.apply(declined, reply("InventoryReleased", OID), ctx())

    assert released.saga.state == "failed"
    assert released.saga.failure_reason == "payment_declined"
    assert types(released.events) == ["OrderFailed", "NotificationRequested"]
    assert released.events[0].data == {
        "reason": "payment_declined",
        "detail": "payment failed: card_declined",
        "payment_method_token": "pm_card1",
    }


@pytest.mark.parametrize("replies", [[], ["InventoryReserved"]])
def test_a_cancel_while_reserving_or_awaiting_payment_releases_then_fails_as_cancelled(replies: list[str]) -> None:
    current, _ = run(*(reply(t, OID) for t in replies))

    cancelling = transitions.apply(current, reply("OrderCancelRequested", OID), ctx())

    assert cancelling.saga.state == "compensating"
    assert types(cancelling.events) == ["ReleaseInventory"]
    assert cancelling.events[0].data == {"reservation_id": f"res_{OID}", "reason": "cancelled"}
    done = transitions.apply(cancelling.saga, reply("InventoryReleased", OID, released=False), ctx())
    assert (done.saga.state, done.saga.failure_reason) == ("failed", "cancelled")
    assert done.saga.steps[-2].detail == "nothing was held"


def test_a_reservation_that_lands_after_a_cancel_is_ignored_because_the_release_follows() -> None:
    cancelled, _ = run(reply("OrderCancelRequested", OID))

    late = transitions.apply(cancelled, reply("InventoryReserved", OID), ctx())

    assert late.saga.state == "compensating"
    assert late.events == ()
    assert late.saga.steps[-1].status == "ignored"
    assert "release follows" in late.saga.steps[-1].detail


@pytest.mark.parametrize(
    ("history", "event_type"),
    [
        (["OrderCancelRequested"], "OrderCancelRequested"),
        (["InventoryReserved", "PaymentCompleted"], "OrderCancelRequested"),
        (["InventoryReserved", "PaymentCompleted"], "PaymentFailed"),
        (["InventoryReserved", "PaymentCompleted"], "InventoryReleased"),
        (["InventoryReservationFailed"], "InventoryReserved"),
        (["InventoryReservationFailed"], "InventoryReservationFailed"),
        (["InventoryReservationFailed"], "PaymentCompleted"),
        (["InventoryReserved"], "InventoryReserved"),
        ([], "InventoryReleased"),
        ([], "PaymentRefunded"),
        ([], "InventoryCommitted"),
        ([], "OrderCreated"),
    ],
)
def test_events_that_make_no_sense_in_the_current_state_are_recorded_as_ignored(
    history: list[str], event_type: str
) -> None:
    current, _ = run(*(reply(t, OID) for t in history))
    event = order_created(OID) if event_type == "OrderCreated" else reply(event_type, OID)

    outcome = transitions.apply(current, event, ctx())

    assert outcome.events == ()
    assert outcome.saga.state == current.state
    assert outcome.saga.steps[-1].status == "ignored"
    assert outcome.saga.steps[-1].event_id == event.event_id
    assert outcome.saga.steps[-1].detail


def test_a_duplicate_event_changes_nothing() -> None:
    reserved = reply("InventoryReserved", OID)
    current, _ = run(reserved)

    again = transitions.apply(current, reserved, ctx())

    assert again == Transition(current, changed=False)


def test_a_reply_for_another_reservation_is_ignored() -> None:
    current, _ = run(reply("InventoryReserved", OID, reservation_id="res_other"))

    assert current.state == "reserving"
    assert current.steps[-1].status == "ignored"


@pytest.mark.parametrize(
    "event",
    [
        reply("InventoryReserved", OID, reservation_id=None),
        reply("PaymentCompleted", OID, payment_id=""),
        reply("InventoryReservationFailed", OID, reason="space_aliens"),
    ],
)
def test_a_reply_that_breaks_the_contract_raises_invalid_event_data(event: Envelope) -> None:
    current, _ = run()

    with pytest.raises(InvalidEventData):
        transitions.apply(current, event, ctx())


def test_nothing_times_out_before_its_deadline() -> None:
    current, _ = run(reply("InventoryReserved", OID))

    assert saga.on_timeout(current, ctx(59.999)).changed is False


def test_a_missed_payment_deadline_releases_the_stock_as_payment_timeout() -> None:
    current, _ = run(reply("InventoryReserved", OID))
    assert saga.next_deadline(current, TIMEOUTS) == saga.Deadline(T0 + timedelta(seconds=60), "payment")

    timed_out = saga.on_timeout(current, ctx(60))

    assert (timed_out.saga.state, timed_out.saga.failure_reason) == ("compensating", "payment_timeout")
    assert [(e.event_type, e.data["reason"]) for e in timed_out.events] == [("ReleaseInventory", "payment_timeout")]
    assert timed_out.events[0].causation_id is None


def test_a_missed_order_deadline_while_reserving_releases_as_order_timeout() -> None:
    current, _ = run()

    timed_out = saga.on_timeout(current, ctx(300))

    assert (timed_out.saga.state, timed_out.saga.failure_reason) == ("compensating", "order_timeout")
    assert types(timed_out.events) == ["ReleaseInventory"]


def test_the_order_deadline_wins_when_it_comes_before_the_payment_deadline() -> None:
    current, _ = run()
    reserved = transitions.apply(current, reply("InventoryReserved", OID), ctx(290)).saga

    timed_out = saga.on_timeout(reserved, ctx(300))

    assert timed_out.saga.failure_reason == "order_timeout"


def test_a_compensation_stuck_past_the_grace_period_fails_with_its_pending_reason() -> None:
    current, _ = run(reply("InventoryReserved", OID), reply("PaymentFailed", OID))
    due = saga.next_deadline(current, TIMEOUTS)
    assert due == saga.Deadline(T0 + timedelta(seconds=360), "compensation")

    assert saga.on_timeout(current, ctx(359)).changed is False
    failed = saga.on_timeout(current, ctx(360))

    assert (failed.saga.state, failed.saga.failure_reason) == ("failed", "payment_declined")
    assert types(failed.events) == ["OrderFailed", "NotificationRequested"]


def test_a_late_payment_after_a_timeout_is_refunded_exactly_once() -> None:
    current, _ = run(reply("InventoryReserved", OID))
    timed_out = saga.on_timeout(current, ctx(60)).saga
    late = reply("PaymentCompleted", OID)

    refunded = transitions.apply(timed_out, late, ctx(61))
    redelivered = transitions.apply(refunded.saga, late, ctx(62))
    reemitted = transitions.apply(refunded.saga, reply("PaymentCompleted", OID), ctx(62))

    assert types(refunded.events) == ["RefundRequested"]
    assert refunded.events[0].data == {"payment_id": f"pay_{OID}", "reason": "payment_timeout"}
    assert refunded.saga.refund_requested is True
    assert refunded.saga.state == "compensating"
    assert redelivered.changed is False
    assert reemitted.events == ()
    assert reemitted.saga.steps[-1].status == "ignored"


def test_a_late_payment_after_the_saga_failed_is_refunded_and_the_refund_recorded() -> None:
    failed, _ = run(
        reply("InventoryReserved", OID), reply("OrderCancelRequested", OID), reply("InventoryReleased", OID)
    )

    refunded = transitions.apply(failed, reply("PaymentCompleted", OID), ctx())
    confirmed = transitions.apply(refunded.saga, reply("PaymentRefunded", OID), ctx())

    assert failed.state == "failed"
    assert types(refunded.events) == ["RefundRequested"]
    assert refunded.events[0].data["reason"] == "cancelled"
    assert confirmed.saga.steps[-1].step == "take_payment"
    assert confirmed.saga.steps[-1].status == "compensated"


def test_a_cancel_that_overtakes_order_created_fails_the_order_when_it_arrives() -> None:
    early = saga.cancel_before_start(reply("OrderCancelRequested", OID), ctx())
    assert early.saga.state == "cancelled_early"
    assert early.events == ()

    created = transitions.apply(early.saga, order_created(OID), ctx(1))

    assert (created.saga.state, created.saga.failure_reason) == ("failed", "cancelled")
    assert types(created.events) == ["OrderFailed", "NotificationRequested"]
    assert created.events[1].data["customer_email"] == "ann@example.com"


def test_a_reservation_that_expires_while_awaiting_payment_fails_the_order_and_a_later_payment_is_refunded() -> None:
    expired, emitted = run(reply("InventoryReserved", OID), reply("InventoryReleased", OID, expired=True))

    late = transitions.apply(expired, reply("PaymentCompleted", OID), ctx())

    assert (expired.state, expired.failure_reason) == ("failed", "order_timeout")
    assert types(emitted)[-2:] == ["OrderFailed", "NotificationRequested"]
    assert types(late.events) == ["RefundRequested"]


def test_the_commit_confirmation_is_recorded_on_a_completed_saga() -> None:
    current, _ = run(reply("InventoryReserved", OID), reply("PaymentCompleted", OID), reply("InventoryCommitted", OID))

    assert step_log(current)[-1] == ("commit_inventory", "completed")


def test_only_the_most_recent_handled_events_are_kept() -> None:
    current, _ = run()
    for _ in range(saga.HANDLED_EVENTS_KEPT + 5):
        current = transitions.apply(current, reply("PaymentRefunded", OID), ctx()).saga

    assert len(current.handled_events) == saga.HANDLED_EVENTS_KEPT
    assert len(current.steps) <= saga.STEPS_KEPT


def test_every_started_step_counts_an_attempt() -> None:
    current, _ = run(reply("InventoryReserved", OID))

    assert current.attempts == {"reserve_inventory": 1, "take_payment": 1}
