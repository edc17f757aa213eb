"""The saga's reaction to each event type, decided by the saga's state.

Events that arrive late, twice or out of order are never errors: they are recorded as
"ignored" steps with the reason (or, for a payment that lands after the saga gave up,
answered with exactly one refund request).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from services.orchestrator.domain import InvalidEventData, parse_order
from services.orchestrator.saga import (
    AWAITING_PAYMENT,
    CANCELLED_EARLY,
    COMPENSATING,
    COMPLETED,
    FAILED,
    REASON_TEXT,
    RESERVATION_FAILURES,
    RESERVING,
    Context,
    SagaState,
    Transition,
    change,
    compensate,
    fail,
    ignore,
    notice,
    remember,
)
from shared.events import Envelope

Rule = Callable[[SagaState, Envelope, Context], Transition]


def apply(saga: SagaState, event: Envelope, ctx: Context) -> Transition:
    """Apply one event to an existing saga; an event already handled changes nothing."""
    if event.event_id in saga.handled_events:
        return Transition(saga, changed=False)
    rule = TRANSITIONS.get(event.event_type)
    if rule is None:
        return remember(ignore(saga, ctx, event, "the saga does not handle this event type"), event)
    return remember(rule(saga, event, ctx), event)


def on_order_created(saga: SagaState, event: Envelope, ctx: Context) -> Transition:
    if saga.state != CANCELLED_EARLY:
        return ignore(saga, ctx, event, "the saga for this order already exists")
    order, _problem = parse_order(event.data)
    steps = [("cancel_order", "completed", "nothing was reserved or charged")]
    return fail(replace(saga, order=order), ctx, event, "cancelled", "cancelled before processing started", steps)


def on_cancel_requested(saga: SagaState, event: Envelope, ctx: Context) -> Transition:
    if saga.state in (RESERVING, AWAITING_PAYMENT):
        return compensate(saga, ctx, event, "cancelled", "cancelled on request", [])
    return ignore(saga, ctx, event, f"nothing to cancel in state {saga.state}")


def on_inventory_reserved(saga: SagaState, event: Envelope, ctx: Context) -> Transition:
    if not _matches(event, "reservation_id", saga.reservation_id):
        return ignore(saga, ctx, event, "reservation id does not belong to this saga")
    if saga.state == COMPENSATING:
        return ignore(saga, ctx, event, "reserved before the release was processed; the release follows")
    if saga.state != RESERVING or saga.order is None:
        return ignore(saga, ctx, event, f"stock already settled in state {saga.state}")
    payment_id = f"pay_{saga.order_id}"
    order = saga.order
    request = {
        "payment_id": payment_id,
        "amount": order.total_amount,
        "payment_method": order.payment_method,
        "payment_method_token": order.payment_method_token,
        "card_brand": order.card_brand,
        "card_last4": order.card_last4,
        "customer_id": order.customer_id,
    }
    return change(
        saga,
        ctx,
        event,
        [("reserve_inventory", "completed", None), ("take_payment", "started", None)],
        [("PaymentRequested", request)],
        state=AWAITING_PAYMENT,
        payment_id=payment_id,
        payment_deadline=ctx.now + ctx.timeouts.payment,
    )


def on_reservation_failed(saga: SagaState, event: Envelope, ctx: Context) -> Transition:
    if not _matches(event, "reservation_id", saga.reservation_id):
        return ignore(saga, ctx, event, "reservation id does not belong to this saga")
    if saga.state != RESERVING:
        return ignore(saga, ctx, event, f"reservation outcome no longer awaited in state {saga.state}")
    reason = event.data.get("reason")
    if reason not in RESERVATION_FAILURES:
        raise InvalidEventData(f"InventoryReservationFailed reason must be one of {RESERVATION_FAILURES}")
    detail = str(event.data.get("detail") or REASON_TEXT[reason])
    return fail(saga, ctx, event, reason, detail, [("reserve_inventory", "failed", detail)])


def on_inventory_released(saga: SagaState, event: Envelope, ctx: Context) -> Transition:
    if not _matches(event, "reservation_id", saga.reservation_id):
        return ignore(saga, ctx, event, "reservation id does not belong to this saga")
    if saga.state == AWAITING_PAYMENT and event.data.get("expired"):
        # Inventory let the reservation lapse: the order cannot complete; a payment still
        # arriving meets a failed saga and is refunded.
        expired = [("reserve_inventory", "compensated", "reservation expired")]
        return fail(saga, ctx, event, "order_timeout", "the stock reservation expired before payment", expired)
    if saga.state != COMPENSATING:
        return ignore(saga, ctx, event, f"no release pending in state {saga.state}")
    released = "stock released" if event.data.get("released", True) else "nothing was held"
    reason = saga.failure_reason or "order_timeout"
    detail = saga.failure_detail or REASON_TEXT[reason]
    return fail(saga, ctx, event, reason, detail, [("reserve_inventory", "compensated", released)])


def on_inventory_committed(saga: SagaState, event: Envelope, ctx: Context) -> Transition:
    if saga.state != COMPLETED or not _matches(event, "reservation_id", saga.reservation_id):
        return ignore(saga, ctx, event, f"no commit pending in state {saga.state}")
    return change(saga, ctx, event, [("commit_inventory", "completed", None)])


def on_payment_completed(saga: SagaState, event: Envelope, ctx: Context) -> Transition:
    if not _matches(event, "payment_id", saga.payment_id):
        return ignore(saga, ctx, event, "payment id does not belong to this saga (or was never requested)")
    if saga.state in (COMPENSATING, FAILED):
        if saga.refund_requested:
            return ignore(saga, ctx, event, "late payment: refund already requested")
        reason = saga.failure_reason or "order_failed"
        steps = [("take_payment", "completed", "late payment"), ("refund_payment", "started", reason)]
        refund = {"payment_id": saga.payment_id, "reason": reason}
        return change(saga, ctx, event, steps, [("RefundRequested", refund)], refund_requested=True)
    if saga.state != AWAITING_PAYMENT or saga.order is None:
        return ignore(saga, ctx, event, f"payment already settled in state {saga.state}")
    order = saga.order
    completed = {
        "payment_id": saga.payment_id,
        "reservation_id": saga.reservation_id,
        "total_amount": order.total_amount,
    }
    message = notice(
        saga,
        "order_confirmation",
        f"Order {saga.order_id} confirmed",
        f"Thank you! Your order {saga.order_id} of {order.total_amount:.2f} has been confirmed.",
    )
    steps = [
        ("take_payment", "completed", None),
        ("commit_inventory", "started", None),
        ("notify_customer", "completed", "order_confirmation requested"),
    ]
    events = [
        ("CommitInventory", {"reservation_id": saga.reservation_id}),
        ("OrderCompleted", completed),
        ("NotificationRequested", message),
    ]
    return change(saga, ctx, event, steps, events, state=COMPLETED)


def on_payment_failed(saga: SagaState, event: Envelope, ctx: Context) -> Transition:
    if not _matches(event, "payment_id", saga.payment_id):
        return ignore(saga, ctx, event, "payment id does not belong to this saga (or was never requested)")
    if saga.state != AWAITING_PAYMENT:
        return ignore(saga, ctx, event, f"payment outcome no longer awaited in state {saga.state}")
    why = str(event.data.get("reason") or "declined")
    return compensate(saga, ctx, event, "payment_declined", f"payment failed: {why}", [("take_payment", "failed", why)])


def on_payment_refunded(saga: SagaState, event: Envelope, ctx: Context) -> Transition:
    if not saga.refund_requested or not _matches(event, "payment_id", saga.payment_id):
        return ignore(saga, ctx, event, "no refund was requested by this saga")
    return change(saga, ctx, event, [("take_payment", "compensated", "refunded")])


TRANSITIONS: dict[str, Rule] = {
    "OrderCreated": on_order_created,
    "OrderCancelRequested": on_cancel_requested,
    "InventoryReserved": on_inventory_reserved,
    "InventoryReservationFailed": on_reservation_failed,
    "InventoryReleased": on_inventory_released,
    "InventoryCommitted": on_inventory_committed,
    "PaymentCompleted": on_payment_completed,
    "PaymentFailed": on_payment_failed,
    "PaymentRefunded": on_payment_refunded,
}


def _matches(event: Envelope, key: str, expected: str | None) -> bool:
    """Tell whether a reply names this saga's deterministic id; a missing id breaks the contract."""
    value = event.data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEventData(f"{event.event_type} has no {key}")
    return expected is not None and value == expected
