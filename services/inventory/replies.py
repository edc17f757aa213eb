"""The events the inventory service emits, with ids derived from their cause.

A command handled twice (a redelivery after a crash) produces a reply with the same event id,
so writing it again adds nothing and consumers drop a duplicate by id.
"""

from __future__ import annotations

import uuid
from typing import Any

from services.inventory.domain import FAILED, RELEASED, RESERVED, Reservation
from shared.events import Envelope

SOURCE = "inventory"
_REPLY_NAMESPACE = uuid.UUID("0b6c9a3e-7f38-4b55-9a39-6f1c2a9d51e4")


def reply_id(cause_id: str, event_type: str) -> str:
    """Return the id of the ``event_type`` reply to the command (or cause) ``cause_id``."""
    return str(uuid.uuid5(_REPLY_NAMESPACE, f"{cause_id}:{event_type}"))


def replies(command: Envelope | None, order_id: str, event_type: str, data: dict[str, Any]) -> list[Envelope]:
    """Return the reply to ``command`` for ``order_id``, or none when no command asked (REST)."""
    if command is None:
        return []
    return [
        Envelope(
            event_type=event_type,
            order_id=order_id,
            source=SOURCE,
            data=data,
            customer_id=command.customer_id,
            correlation_id=command.correlation_id,
            causation_id=command.event_id,
            event_id=reply_id(command.event_id, event_type),
        )
    ]


def outcome_replies(reservation: Reservation, command: Envelope | None) -> list[Envelope]:
    """Return the reply telling ``command`` whether the reservation was made (none once it moved on)."""
    rid = reservation.reservation_id
    if reservation.status == RESERVED:
        data: dict[str, Any] = {"reservation_id": rid, "items": [line.to_dict() for line in reservation.items]}
        return replies(command, reservation.order_id, "InventoryReserved", data)
    if reservation.status == FAILED:
        data = {"reservation_id": rid, "reason": reservation.reason, "detail": reservation.detail}
        data["items"] = [s.to_dict() for s in reservation.shortages]
        return replies(command, reservation.order_id, "InventoryReservationFailed", data)
    return []


def expiry_event(reservation: Reservation) -> Envelope:
    """Return the InventoryReleased that tells the saga its reservation expired."""
    rid = reservation.reservation_id
    return Envelope(
        event_type="InventoryReleased",
        order_id=reservation.order_id,
        source=SOURCE,
        data={"reservation_id": rid, "released": True, "expired": True},
        customer_id=reservation.customer_id,
        correlation_id=reservation.correlation_id,
        event_id=reply_id(rid, "expired"),
    )


def tombstone(reservation_id: str, command: Envelope, now: Any) -> Reservation:
    """Return an empty released reservation that records a command about an unknown reservation."""
    return Reservation(
        reservation_id,
        command.order_id,
        [],
        RELEASED,
        now,
        now,
        now,
        reason="never_reserved",
        detail=f"{command.event_type} arrived before any reservation",
        origin="saga",
        correlation_id=command.correlation_id,
        customer_id=command.customer_id,
    )
