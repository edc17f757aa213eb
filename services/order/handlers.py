"""Kafka in: the saga's reports, each turned into a forward-only status change of the order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.order.domain import Transition, is_failure_reason, now
from services.order.service import OrderService
from shared.events import Envelope
from shared.kafka_utils import PermanentError


def validated(event: Envelope) -> Transition:
    """The order is validated."""
    return Transition("validated", now())


def inventory_reserved(event: Envelope) -> Transition:
    """The order's stock is reserved: remember the reservation."""
    return Transition("inventory_reserved", now(), reservation_id=_text(event, "reservation_id"))


def payment_requested(event: Envelope) -> Transition:
    """The order is being paid: remember the payment."""
    return Transition("payment_processing", now(), payment_id=_text(event, "payment_id"))


def completed(event: Envelope) -> Transition:
    """The order completed with its payment and reservation."""
    return Transition(
        "completed",
        now(),
        payment_id=_text(event, "payment_id", required=False),
        reservation_id=_text(event, "reservation_id", required=False),
    )


def failed(event: Envelope) -> Transition:
    """The order failed with the saga's reason and detail."""
    reason = event.data.get("reason")
    if not is_failure_reason(reason):
        raise PermanentError(f"OrderFailed has an unknown reason {reason!r}")
    detail = event.data.get("detail")
    detail = str(detail)[:1000] if detail is not None else None
    return Transition("failed", now(), failure_reason=reason, failure_detail=detail)


def _text(event: Envelope, name: str, *, required: bool = True) -> str | None:
    value = event.data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 1000:
        raise PermanentError(f"{event.event_type} field {name} must be a non-empty string, not {value!r}")
    return value


TRANSITIONS: dict[str, Callable[[Envelope], Transition]] = {
    "OrderValidated": validated,
    "InventoryReserved": inventory_reserved,
    "PaymentRequested": payment_requested,
    "OrderCompleted": completed,
    "OrderFailed": failed,
}


def apply_event(service: OrderService, event: Envelope) -> None:
    """Apply one report (the runner's way to find the culprit in a batch that failed)."""
    service.apply(event.order_id, TRANSITIONS[event.event_type](event))


def apply_batch(service: OrderService, events: Sequence[Envelope]) -> dict[str, PermanentError]:
    """Apply every fetched report in one bulk write; return the unusable ones by event id."""
    refused: dict[str, PermanentError] = {}
    moves = []
    for event in events:
        try:
            moves.append((event.order_id, TRANSITIONS[event.event_type](event)))
        except PermanentError as err:
            refused[event.event_id] = err
    service.apply_many(moves)
    return refused


HANDLERS: dict[str, Callable[[OrderService, Envelope], None]] = dict.fromkeys(TRANSITIONS, apply_event)
