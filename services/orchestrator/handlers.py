"""Kafka in: the events the saga reacts to, each handed to the saga service."""

from __future__ import annotations

from collections.abc import Sequence

from services.orchestrator.domain import InvalidEventData
from services.orchestrator.service import SagaService
from shared.events import Envelope
from shared.kafka_utils import PermanentError


def start_saga(service: SagaService, event: Envelope) -> None:
    """Start the saga of a new order (OrderCreated)."""
    try:
        service.start(event)
    except InvalidEventData as err:
        raise PermanentError(str(err)) from err


def advance_saga(service: SagaService, event: Envelope) -> None:
    """Move a saga on with a reply, a cancel request or a late event."""
    try:
        service.advance(event)
    except InvalidEventData as err:
        # The data breaks the contract: dead-letter it at once; the saga's deadlines still apply.
        raise PermanentError(str(err)) from err


def handle_batch(service: SagaService, events: Sequence[Envelope]) -> dict[str, PermanentError]:
    """Apply every fetched event, writing the sagas together; return the unusable ones by event id."""
    refused = service.apply_many(events)
    return {event_id: PermanentError(str(err)) for event_id, err in refused.items()}


HANDLERS = {
    "OrderCreated": start_saga,
    "OrderCancelRequested": advance_saga,
    "InventoryReserved": advance_saga,
    "InventoryReservationFailed": advance_saga,
    "InventoryReleased": advance_saga,
    "InventoryCommitted": advance_saga,
    "PaymentCompleted": advance_saga,
    "PaymentFailed": advance_saga,
    "PaymentRefunded": advance_saga,
}
