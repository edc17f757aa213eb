"""Kafka in: the saga's notification requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, StringConstraints, ValidationError

from services.notification.domain import DeliveryFailed
from services.notification.service import NotificationRequest, NotificationService
from shared.events import Envelope
from shared.kafka_utils import PermanentError


class NotificationRequestedData(BaseModel):
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    customer_email: Annotated[str, StringConstraints(max_length=254)] | None = None
    type: Annotated[str, StringConstraints(min_length=1, max_length=50)]
    subject: Annotated[str, StringConstraints(max_length=500)] = ""
    message: Annotated[str, StringConstraints(max_length=10_000)]


def notification_requested(service: NotificationService, event: Envelope) -> None:
    """Send the order's notification once; a failed send is retried by the runner."""
    try:
        service.process_notification_request(_request(event), event)
    except DeliveryFailed as err:
        if err.permanent:
            raise PermanentError(str(err)) from err
        raise


def handle_batch(service: NotificationService, events: Sequence[Envelope]) -> dict[str, PermanentError]:
    """Deliver every fetched request with two bulk writes; return the unusable ones by event id.

    A failed send raises (see ``process_notification_requests``): the runner retries an outage
    and otherwise takes the batch one event at a time, which dead-letters an undeliverable one.
    """
    refused: dict[str, PermanentError] = {}
    requests = []
    for event in events:
        try:
            requests.append((_request(event), event))
        except PermanentError as err:
            refused[event.event_id] = err
    if requests:
        service.process_notification_requests(requests)
    return refused


def _request(event: Envelope) -> NotificationRequest:
    try:
        data = NotificationRequestedData.model_validate(event.data)
    except ValidationError as err:
        raise PermanentError(f"NotificationRequested data is invalid: {err}") from err
    customer_id = data.customer_id or event.customer_id
    if not customer_id:
        raise PermanentError("NotificationRequested names no customer to notify")
    return NotificationRequest(
        customer_id=customer_id,
        type=data.type,
        message=data.message,
        subject=data.subject or data.type.replace("_", " ").capitalize(),
        customer_email=data.customer_email or None,
        order_id=event.order_id,
    )


HANDLERS = {"NotificationRequested": notification_requested}
