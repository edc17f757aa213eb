"""Kafka in: every event type goes to the same recorder."""

from __future__ import annotations

from services.monitoring.domain import InvalidOrderId
from services.monitoring.service import MonitoringService
from shared.events import TOPIC_BY_EVENT, Envelope
from shared.kafka_utils import PermanentError


def record_event(service: MonitoringService, event: Envelope) -> None:
    """Add any event to its order's timeline and the figures (a redelivery changes nothing)."""
    try:
        service.record(event)
    except InvalidOrderId as err:
        raise PermanentError(str(err)) from err


HANDLERS = {event_type: record_event for event_type in TOPIC_BY_EVENT}
