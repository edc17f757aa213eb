"""Kafka in: the saga's inventory commands. Replies leave through the reservation's outbox."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.inventory.domain import InvalidInput, check_reservation_id, parse_lines
from services.inventory.service import InventoryService
from shared.events import Envelope
from shared.kafka_utils import PermanentError

MAX_REASON_LENGTH = 200


def reserve_inventory(service: InventoryService, event: Envelope) -> None:
    """Hold the order's items (all or none) and reply InventoryReserved or InventoryReservationFailed."""
    rid = _reservation_id(event)
    try:
        lines = parse_lines(event.data.get("items"))
    except InvalidInput as err:
        raise PermanentError(f"ReserveInventory {event.event_id}: {err}") from err
    service.reserve(rid, event.order_id, lines, command=event)


def release_inventory(service: InventoryService, event: Envelope) -> None:
    """Return the reservation's units to stock and reply InventoryReleased."""
    reason = event.data.get("reason")
    reason = reason[:MAX_REASON_LENGTH] if isinstance(reason, str) and reason else "released"
    service.release(_reservation_id(event), command=event, reason=reason)


def commit_inventory(service: InventoryService, event: Envelope) -> None:
    """Turn the reserved units into sold ones and reply InventoryCommitted."""
    service.commit(_reservation_id(event), command=event)


def _reservation_id(event: Envelope) -> str:
    try:
        return check_reservation_id(event.data.get("reservation_id"))
    except InvalidInput as err:
        raise PermanentError(f"{event.event_type} {event.event_id}: {err}") from err


HANDLERS: dict[str, Callable[[Any, Envelope], None]] = {
    "ReserveInventory": reserve_inventory,
    "ReleaseInventory": release_inventory,
    "CommitInventory": commit_inventory,
}
