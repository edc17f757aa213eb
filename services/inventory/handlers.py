"""Kafka in: the saga's inventory commands. Replies leave through the reservation's outbox."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from services.inventory.domain import InvalidInput, check_reservation_id, parse_lines
from services.inventory.service import Reservations, ReserveRequest, SettleRequest
from shared.events import Envelope
from shared.kafka_utils import PermanentError

MAX_REASON_LENGTH = 200


def reserve_inventory(service: Reservations, event: Envelope) -> None:
    """Hold the order's items (all or none) and reply InventoryReserved or InventoryReservationFailed."""
    rid = _reservation_id(event)
    try:
        lines = parse_lines(event.data.get("items"))
    except InvalidInput as err:
        raise PermanentError(f"ReserveInventory {event.event_id}: {err}") from err
    service.reserve(rid, event.order_id, lines, command=event)


def release_inventory(service: Reservations, event: Envelope) -> None:
    """Return the reservation's units to stock and reply InventoryReleased."""
    service.release(_reservation_id(event), command=event, reason=_release_reason(event))


def commit_inventory(service: Reservations, event: Envelope) -> None:
    """Turn the reserved units into sold ones and reply InventoryCommitted."""
    service.commit(_reservation_id(event), command=event)


def handle_batch(service: Reservations, events: Sequence[Envelope]) -> dict[str, PermanentError]:
    """Handle every fetched command, ending as one after another would; return the unusable ones
    by event id. Consecutive commands of one kind (reserve, or commit/release) about distinct
    reservations go to the service together, so their writes are shared."""
    refused: dict[str, PermanentError] = {}
    run: list[ReserveRequest | SettleRequest] = []
    in_run: set[str] = set()  # the run's reservation ids
    for event in events:
        try:
            request = _request(event)
        except PermanentError as err:
            refused[event.event_id] = err
            continue
        same_kind = bool(run) and isinstance(run[0], ReserveRequest) == isinstance(request, ReserveRequest)
        if not same_kind or request.reservation_id in in_run:
            _handle_run(service, run)
            run, in_run = [], set()
        run.append(request)
        in_run.add(request.reservation_id)
    _handle_run(service, run)
    return refused


def _request(event: Envelope) -> ReserveRequest | SettleRequest:
    rid = _reservation_id(event)
    if event.event_type == "ReserveInventory":
        try:
            return ReserveRequest(rid, event, parse_lines(event.data.get("items")))
        except InvalidInput as err:
            raise PermanentError(f"ReserveInventory {event.event_id}: {err}") from err
    if event.event_type == "ReleaseInventory":
        return SettleRequest(rid, event, _release_reason(event))
    return SettleRequest(rid, event)


def _handle_run(service: Reservations, run: Sequence[ReserveRequest | SettleRequest]) -> None:
    """Hand a run of one kind to the service."""
    if not run:
        return
    reserves = [request for request in run if isinstance(request, ReserveRequest)]
    if reserves:
        service.reserve_many(reserves)
    else:
        service.settle_many([request for request in run if isinstance(request, SettleRequest)])


def _release_reason(event: Envelope) -> str:
    reason = event.data.get("reason")
    return reason[:MAX_REASON_LENGTH] if isinstance(reason, str) and reason else "released"


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
