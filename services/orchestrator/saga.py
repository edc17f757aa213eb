"""The order saga as a pure state machine: its state, creation, deadlines and the
building blocks of every transition (the per-event rules live in ``transitions.py``).

A transition is a pure function returning the new SagaState and the Envelopes to emit; the
service writes both in one document update (the outbox) guarded by the saga's version.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from services.orchestrator.domain import OrderSnapshot, Step, parse_order
from shared.events import Envelope

SOURCE = "orchestrator"
CANCELLED_EARLY = "cancelled_early"  # a cancel overtook OrderCreated (they travel on different topics)
RESERVING = "reserving"
AWAITING_PAYMENT = "awaiting_payment"
COMPENSATING = "compensating"
COMPLETED = "completed"
FAILED = "failed"
STATES = (CANCELLED_EARLY, RESERVING, AWAITING_PAYMENT, COMPENSATING, COMPLETED, FAILED)
ACTIVE_STATES = frozenset({RESERVING, AWAITING_PAYMENT, COMPENSATING})
TERMINAL_STATES = frozenset({COMPLETED, FAILED})
HANDLED_EVENTS_KEPT = 50
STEPS_KEPT = 100
RESERVATION_FAILURES = ("out_of_stock", "invalid_order")
REASON_TEXT = {
    "out_of_stock": "some items are out of stock",
    "payment_declined": "the payment was declined",
    "payment_timeout": "the payment did not complete in time",
    "order_timeout": "the order could not be completed in time",
    "cancelled": "the order was cancelled",
    "invalid_order": "the order is invalid",
}


StepSpec = tuple[str, str, str | None]  # (step, status, detail)


@dataclass(frozen=True)
class Timeouts:
    payment: timedelta
    order: timedelta


@dataclass(frozen=True)
class Context:
    now: datetime
    timeouts: Timeouts


@dataclass(frozen=True)
class Deadline:
    at: datetime
    kind: str  # payment | order | compensation


@dataclass(frozen=True)
class SagaState:
    order_id: str
    state: str
    order: OrderSnapshot | None
    created_at: datetime
    updated_at: datetime
    reservation_id: str | None = None
    payment_id: str | None = None
    failure_reason: str | None = None  # while compensating: the reason the saga will fail with
    failure_detail: str | None = None
    refund_requested: bool = False
    steps: tuple[Step, ...] = ()
    handled_events: tuple[str, ...] = ()
    attempts: dict[str, int] = field(default_factory=dict)
    version: int = 0
    payment_deadline: datetime | None = None
    order_deadline: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class Transition:
    saga: SagaState
    events: tuple[Envelope, ...] = ()
    changed: bool = True


def start(event: Envelope, ctx: Context) -> Transition:
    """Create the saga of a new order: validate it, then reserve stock or fail it."""
    order, problem = parse_order(event.data)
    saga = SagaState(event.order_id, RESERVING, order, created_at=ctx.now, updated_at=ctx.now)
    if problem:
        return remember(
            fail(saga, ctx, event, "invalid_order", problem, [("validate_order", "failed", problem)]), event
        )
    reservation_id = f"res_{event.order_id}"
    return remember(
        change(
            saga,
            ctx,
            event,
            [("validate_order", "completed", None), ("reserve_inventory", "started", None)],
            [
                ("OrderValidated", {"total_amount": order.total_amount}),
                ("ReserveInventory", {"reservation_id": reservation_id, "items": order.item_dicts()}),
            ],
            reservation_id=reservation_id,
            order_deadline=ctx.now + ctx.timeouts.order,
        ),
        event,
    )


def cancel_before_start(event: Envelope, ctx: Context) -> Transition:
    """Remember a cancel that arrived before its OrderCreated, so the order fails when it comes."""
    saga = SagaState(event.order_id, CANCELLED_EARLY, None, created_at=ctx.now, updated_at=ctx.now)
    detail = "cancel arrived before OrderCreated; the order fails when it arrives"
    return remember(change(saga, ctx, event, [("cancel_order", "started", detail)]), event)


def on_timeout(saga: SagaState, ctx: Context) -> Transition:
    """Act on the saga's next deadline if it has passed."""
    due = next_deadline(saga, ctx.timeouts)
    if due is None or due.at > ctx.now:
        return Transition(saga, changed=False)
    if due.kind == "payment":
        failed = ("take_payment", "failed", "payment_timeout")
        return compensate(saga, ctx, None, "payment_timeout", "no payment result before the deadline", [failed])
    if due.kind == "order":
        step = "reserve_inventory" if saga.state == RESERVING else "take_payment"
        failed = (step, "failed", "order_timeout")
        return compensate(saga, ctx, None, "order_timeout", "the order did not finish before its deadline", [failed])
    reason = saga.failure_reason or "order_timeout"
    detail = "no InventoryReleased before the deadline"
    return fail(saga, ctx, None, reason, saga.failure_detail or detail, [("release_inventory", "failed", detail)])


def next_deadline(saga: SagaState, timeouts: Timeouts) -> Deadline | None:
    """Return the earliest deadline the saga is waiting on, or None when nothing can time out."""
    candidates = []
    if saga.state in (RESERVING, AWAITING_PAYMENT) and saga.order_deadline:
        candidates.append(Deadline(saga.order_deadline, "order"))
    if saga.state == AWAITING_PAYMENT and saga.payment_deadline:
        candidates.append(Deadline(saga.payment_deadline, "payment"))
    if saga.state == COMPENSATING and saga.order_deadline:
        # The release gets a grace period past the order deadline, then the saga fails anyway.
        candidates.append(Deadline(saga.order_deadline + timeouts.payment, "compensation"))
    return min(candidates, key=lambda d: d.at) if candidates else None


def compensate(
    saga: SagaState, ctx: Context, cause: Envelope | None, reason: str, detail: str, steps: list[StepSpec]
) -> Transition:
    """Release the reservation and wait for InventoryReleased before failing with ``reason``."""
    release = {"reservation_id": saga.reservation_id, "reason": reason}
    steps = [*steps, ("release_inventory", "started", reason)]
    return change(
        saga,
        ctx,
        cause,
        steps,
        [("ReleaseInventory", release)],
        state=COMPENSATING,
        failure_reason=reason,
        failure_detail=detail,
    )


def fail(
    saga: SagaState, ctx: Context, cause: Envelope | None, reason: str, detail: str, steps: list[StepSpec]
) -> Transition:
    """End the saga as failed: tell the order service and the customer."""
    text = REASON_TEXT.get(reason, reason)
    message = notice(
        saga, "order_failed", f"Order {saga.order_id} could not be completed", f"Your order failed: {text}."
    )
    steps = [*steps, ("notify_customer", "completed", "order_failed requested")]
    failed: dict[str, Any] = {"reason": reason, "detail": detail}
    if saga.order is not None and saga.order.payment_method_token:
        failed["payment_method_token"] = saga.order.payment_method_token  # the vault deletes its card
    events = [("OrderFailed", failed), ("NotificationRequested", message)]
    return change(saga, ctx, cause, steps, events, state=FAILED, failure_reason=reason, failure_detail=detail)


def ignore(saga: SagaState, ctx: Context, event: Envelope, detail: str) -> Transition:
    """Record that ``event`` changed nothing, and why, so the flow view explains it."""
    return change(saga, ctx, event, [(event.event_type, "ignored", detail)])


def change(
    saga: SagaState,
    ctx: Context,
    cause: Envelope | None,
    steps: list[StepSpec],
    emit: list[tuple[str, dict[str, Any]]] | None = None,
    **fields: Any,
) -> Transition:
    """Return ``saga`` with ``steps`` recorded and ``fields`` set, plus the events it emits."""
    cause_id = cause.event_id if cause else None
    recorded = tuple(Step(name, status, ctx.now, cause_id, detail) for name, status, detail in steps)
    attempts = dict(saga.attempts)
    for name, status, _detail in steps:
        if status == "started":
            attempts[name] = attempts.get(name, 0) + 1
    new = replace(saga, steps=(saga.steps + recorded)[-STEPS_KEPT:], attempts=attempts, updated_at=ctx.now, **fields)
    return Transition(new, tuple(_envelope(new, cause, event_type, data) for event_type, data in emit or []))


def remember(transition: Transition, event: Envelope) -> Transition:
    """Add ``event`` to the saga's recent handled events, so a redelivery is a no-op."""
    handled = (*transition.saga.handled_events, event.event_id)[-HANDLED_EVENTS_KEPT:]
    return replace(transition, saga=replace(transition.saga, handled_events=handled))


def _envelope(saga: SagaState, cause: Envelope | None, event_type: str, data: dict[str, Any]) -> Envelope:
    customer_id = (saga.order.customer_id if saga.order else None) or (cause.customer_id if cause else None)
    return Envelope(
        event_type=event_type,
        order_id=saga.order_id,
        source=SOURCE,
        data=data,
        customer_id=customer_id,
        correlation_id=cause.correlation_id if cause else saga.order_id,
        causation_id=cause.event_id if cause else None,
    )


def notice(saga: SagaState, kind: str, subject: str, message: str) -> dict[str, Any]:
    """Return the data of a NotificationRequested for the saga's customer."""
    order = saga.order
    return {
        "customer_id": (order.customer_id if order else None) or None,
        "customer_email": order.customer_email if order else None,
        "type": kind,
        "subject": subject,
        "message": message,
    }
