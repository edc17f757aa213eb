"""Kafka in: the saga's reports, each turned into a forward-only status change of the order."""

from __future__ import annotations

from collections.abc import Callable

from services.order.domain import Transition, is_failure_reason, now
from services.order.service import OrderService
from shared.events import Envelope
from shared.kafka_utils import PermanentError


def order_validated(service: OrderService, event: Envelope) -> None:
    """Mark the order validated."""
    service.apply(event.order_id, Transition("validated", now()))


def inventory_reserved(service: OrderService, event: Envelope) -> None:
    """Mark the order's stock reserved and remember the reservation."""
    reservation_id = _text(event, "reservation_id")
    service.apply(event.order_id, Transition("inventory_reserved", now(), reservation_id=reservation_id))


def payment_requested(service: OrderService, event: Envelope) -> None:
    """Mark the order as being paid and remember the payment."""
    payment_id = _text(event, "payment_id")
    service.apply(event.order_id, Transition("payment_processing", now(), payment_id=payment_id))


def order_completed(service: OrderService, event: Envelope) -> None:
    """Mark the order completed with its payment and reservation."""
    transition = Transition(
        "completed",
        now(),
        payment_id=_text(event, "payment_id", required=False),
        reservation_id=_text(event, "reservation_id", required=False),
    )
    service.apply(event.order_id, transition)


def order_failed(service: OrderService, event: Envelope) -> None:
    """Mark the order failed with the saga's reason and detail."""
    reason = event.data.get("reason")
    if not is_failure_reason(reason):
        raise PermanentError(f"OrderFailed has an unknown reason {reason!r}")
    detail = event.data.get("detail")
    detail = str(detail)[:1000] if detail is not None else None
    service.apply(event.order_id, Transition("failed", now(), failure_reason=reason, failure_detail=detail))


def _text(event: Envelope, name: str, *, required: bool = True) -> str | None:
    value = event.data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 1000:
        raise PermanentError(f"{event.event_type} field {name} must be a non-empty string, not {value!r}")
    return value


HANDLERS: dict[str, Callable[[OrderService, Envelope], None]] = {
    "OrderValidated": order_validated,
    "InventoryReserved": inventory_reserved,
    "PaymentRequested": payment_requested,
    "OrderCompleted": order_completed,
    "OrderFailed": order_failed,
}
