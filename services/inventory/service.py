"""Inventory use cases: reservations driven over REST or by saga commands (the catalogue admin is
in catalogue.py), and InventoryService, both over one stock store as bootstrap builds them.

There are no transactions, so every step is one conditional single-document write and each
use case can be run again after a crash at any point. A reservation's status is the decision;
``_settled`` then brings the stock holds in line with it, and every path ends by settling.

Round trips are the store's cost, so the usual path reads nothing it does not need: holds are
taken at once (stock is read only to explain a refused one), a transition returns the document
it moved, and a saga's commit or release starts with its transition instead of a read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from prometheus_client import Counter

from services.inventory.catalogue import Catalogue
from services.inventory.domain import (
    ACTIVE,
    COMMITTED,
    EXPIRED,
    FAILED,
    RELEASED,
    RESERVED,
    RESERVING,
    InsufficientStock,
    InvalidOrder,
    Line,
    ManagedBySaga,
    Reservation,
    ReservationNotFound,
    Shortage,
    StockItem,
    find_invalid_line,
    merge_lines,
    ordered_prices,
)
from services.inventory.holds import (
    explain_refusal,
    settle_holds,
    settle_holds_together,
    take_holds,
    take_holds_together,
)
from services.inventory.ports import ReservationRepository, StockRepository
from services.inventory.replies import expiry_event, outcome_replies, replies, tombstone
from shared.events import Envelope, new_id, utc_now

logger = logging.getLogger(__name__)

RESERVATIONS = Counter("inventory_reservations_total", "Reservation attempts by outcome", ["outcome"])
RELEASES = Counter("inventory_releases_total", "Reservations whose stock went back to available")
COMMITS = Counter("inventory_commits_total", "Reservations whose stock was sold")
EXPIRATIONS = Counter("inventory_expirations_total", "Reservations released because they expired")


class ReserveRequest(NamedTuple):
    """A saga's ReserveInventory: hold ``lines`` under ``reservation_id`` for the command's order."""

    reservation_id: str
    command: Envelope
    lines: list[Line]


class SettleRequest(NamedTuple):
    """A saga's CommitInventory (no reason) or ReleaseInventory (with the reason it gave)."""

    reservation_id: str
    command: Envelope
    reason: str | None = None


class Reservations:
    """Reserve, commit, release and expire stock holds, for REST callers and saga commands."""

    def __init__(
        self,
        stock: StockRepository,
        reservations: ReservationRepository,
        *,
        ttl_s: float,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._stock = stock
        self._reservations = reservations
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock

    def create_reservation(self, order_id: str, lines: list[Line]) -> Reservation:
        """Reserve for a REST caller under a fresh id; raise InvalidOrder or InsufficientStock on failure."""
        invalid = find_invalid_line(lines, self._catalogue_of(lines))
        if invalid:
            raise invalid
        reservation = self.reserve(new_id(), order_id, lines)
        if reservation.status == FAILED and reservation.reason == "out_of_stock":
            raise InsufficientStock(reservation.shortages)
        if reservation.status == FAILED:
            product_id = reservation.shortages[0].product_id if reservation.shortages else ""
            raise InvalidOrder("invalid_order", reservation.detail or "invalid order", product_id)
        return reservation

    def get_reservation(self, reservation_id: str) -> Reservation:
        """Return the reservation or raise ReservationNotFound."""
        reservation = self._reservations.get(reservation_id)
        if reservation is None:
            raise ReservationNotFound(f"reservation {reservation_id} not found")
        return reservation

    def reserve(
        self, reservation_id: str, order_id: str, lines: list[Line], *, command: Envelope | None = None
    ) -> Reservation:
        """Hold every line's units for the order, or none of them; answer ``command`` through the outbox."""
        draft = self._draft(reservation_id, order_id, lines, command)
        if not self._reservations.add(draft):
            existing = self.get_reservation(reservation_id)
            if existing.status != RESERVING:
                # Decided before. A redelivered command's reply went out with that decision (same
                # reply id, so this adds nothing); a command re-sent under a new id gets its own.
                logger.info("reservation %s is already %s", reservation_id, existing.status)
                self._reply_once(reservation_id, outcome_replies(existing, command))
                return self._settled(existing)
            draft = existing  # resume an attempt that a crash interrupted; holds are idempotent
        self._reservations.add_timer(reservation_id, draft.expires_at)
        # The holds check each product's price; only a refused one costs reads, to say why. Lines
        # naming one product at two prices are invalid whatever the stock says: no hold is taken.
        prices = ordered_prices(lines)
        refused = 0 if prices is None else take_holds(self._stock, draft, prices, self._clock())
        if refused is not None:
            reason, detail, shortages = explain_refusal(self._stock, lines, draft.items, refused)
            return self._finish(draft, FAILED, command, reason, detail, shortages)
        return self._finish(draft, RESERVED, command)

    def release(
        self, reservation_id: str, *, command: Envelope | None = None, reason: str = "released"
    ) -> tuple[Reservation, bool]:
        """Give the reservation's units back; return it and whether this call released it."""
        data = {"reservation_id": reservation_id, "released": True}
        released = None
        if command is not None:
            released = self._saga_release(reservation_id, command, reason)
        if released is None:
            reservation = self._existing(reservation_id, command, "InventoryReleased", {**data, "released": False})
            if command is None and reservation.origin == "saga" and reservation.status in ACTIVE:
                # Released behind the saga's back, a paid order could complete with its units on sale again.
                raise ManagedBySaga(f"reservation {reservation_id} belongs to an order: cancel the order instead")
            events = replies(command, reservation.order_id, "InventoryReleased", data)
            released = self._move(reservation_id, ACTIVE, RELEASED, events, reason=reason, known=reservation)
            if released is None:
                events = replies(command, reservation.order_id, "InventoryReleased", {**data, "released": False})
                self._reply_once(reservation_id, events)
                return self._settled(self._fresh(reservation)), False
        RELEASES.inc()
        logger.info("released reservation %s (%s)", reservation_id, reason)
        return self._settled(released), True

    def commit(self, reservation_id: str, *, command: Envelope | None = None) -> tuple[Reservation, bool]:
        """Turn the reserved units into sold ones; return the reservation and whether it is committed."""
        data = {"reservation_id": reservation_id, "committed": True}
        committed = None
        if command is not None:
            committed = self._saga_commit(reservation_id, command)
        if committed is None:
            reservation = self._existing(reservation_id, command, "InventoryCommitted", {**data, "committed": False})
            events = replies(command, reservation.order_id, "InventoryCommitted", data)
            committed = self._move(reservation_id, (RESERVED,), COMMITTED, events, known=reservation)
            if committed is None:
                current = self._fresh(reservation)
                done = current.status == COMMITTED  # true when this command is redelivered
                if not done:
                    logger.warning("commit of %s reservation %s changes no stock", current.status, reservation_id)
                events = replies(command, current.order_id, "InventoryCommitted", {**data, "committed": done})
                self._reply_once(reservation_id, events)
                return self._settled(current), done
        COMMITS.inc()
        logger.info("committed reservation %s", reservation_id)
        return self._settled(committed), True

    # --- batches of saga commands ------------------------------------------------------------

    def reserve_many(self, requests: Sequence[ReserveRequest]) -> None:
        """``reserve`` for saga commands of distinct reservations in fewer round trips: the drafts in
        one insert, their timers in one write, their holds in one write per product; each decision
        is still one write. Anything unusual (a product short for the batch, lines that disagree on
        a price, a reservation that exists already after a crash) sends the whole batch one by one,
        in order, so it always ends exactly as one command after another would."""
        if not self._reserved_together(requests):
            self._reserve_each(requests)

    def _reserved_together(self, requests: Sequence[ReserveRequest]) -> bool:
        """Reserve the batch with shared writes; False (holding nothing) when it must go one by one."""
        prices = [ordered_prices(request.lines) for request in requests]
        known_prices = [price for price in prices if price is not None]
        if len(known_prices) < len(prices):
            return False
        drafts = [self._draft(r.reservation_id, r.command.order_id, r.lines, r.command) for r in requests]
        if not all(self._reservations.add_all(drafts)):
            return False  # its drafts are in: each resumes as after a crash
        self._reservations.add_timers([(draft.reservation_id, draft.expires_at) for draft in drafts])
        if not take_holds_together(self._stock, drafts, known_prices, self._clock()):
            return False
        for request, draft in zip(requests, drafts, strict=True):
            self._finish(draft, RESERVED, request.command)
        return True

    def _reserve_each(self, requests: Sequence[ReserveRequest]) -> None:
        for request in requests:
            self.reserve(request.reservation_id, request.command.order_id, request.lines, command=request.command)

    def settle_many(self, requests: Sequence[SettleRequest]) -> None:
        """``commit`` or ``release`` (when the request has a reason) for saga commands of distinct
        reservations, as one after another would, in fewer round trips: each transition is one
        write, then the holds take one write per product and the timers one write. A reservation
        that does not move at once (a redelivery, a command about another order's reservation, an
        unknown one) goes the one-by-one way."""
        moved: list[Reservation] = []
        alone: list[SettleRequest] = []
        for request in requests:
            rid, command = request.reservation_id, request.command
            if request.reason is None:
                reservation = self._saga_commit(rid, command)
            else:
                reservation = self._saga_release(rid, command, request.reason)
            if reservation is None:
                alone.append(request)
                continue
            moved.append(reservation)
            (COMMITS if request.reason is None else RELEASES).inc()
            logger.info("%s reservation %s", "committed" if request.reason is None else "released", rid)
        if moved:
            settle_holds_together(self._stock, moved, self._clock())
            self._reservations.remove_timers([reservation.reservation_id for reservation in moved])
        for request in alone:
            if request.reason is None:
                self.commit(request.reservation_id, command=request.command)
            else:
                self.release(request.reservation_id, command=request.command, reason=request.reason)

    def expire_due(self, limit: int = 100) -> int:
        """Release the active reservations whose time ran out; return how many expired now."""
        expired = 0
        for reservation_id in self._reservations.due_timers(self._clock(), limit):
            reservation = self._reservations.get(reservation_id)
            if reservation is None:
                self._reservations.remove_timer(reservation_id)
                continue
            if reservation.origin == "saga" and reservation.status == RESERVED:
                # The saga settles its reservations itself (commit, or release by its own deadlines);
                # expiring one could put a paid order's units back on sale before its commit arrives.
                self._reservations.remove_timer(reservation_id)
                continue
            events = [expiry_event(reservation)] if reservation.origin == "saga" else []
            moved = self._move(reservation_id, ACTIVE, EXPIRED, events, reason="expired", known=reservation)
            if moved:
                expired += 1
                EXPIRATIONS.inc()
                RELEASES.inc()
                logger.info("reservation %s of order %s expired", reservation_id, reservation.order_id)
            self._settled(moved or self._fresh(reservation))
        return expired

    # --- steps -----------------------------------------------------------------------------

    def _draft(self, reservation_id: str, order_id: str, lines: list[Line], command: Envelope | None) -> Reservation:
        now = self._clock()
        return Reservation(
            reservation_id, order_id, merge_lines(lines), RESERVING, now, now + self._ttl, now,
            origin="saga" if command else "api",
            correlation_id=command.correlation_id if command else None,
            customer_id=command.customer_id if command else None,
        )  # fmt: skip

    def _saga_commit(self, rid: str, command: Envelope) -> Reservation | None:
        """Usually the saga commits its own order's reservation: one write does it, with no read."""
        events = replies(command, command.order_id, "InventoryCommitted", {"reservation_id": rid, "committed": True})
        return self._move(rid, (RESERVED,), COMMITTED, events, order_id=command.order_id)

    def _saga_release(self, rid: str, command: Envelope, reason: str) -> Reservation | None:
        """Usually the saga releases its own order's reservation: one write does it, with no read."""
        events = replies(command, command.order_id, "InventoryReleased", {"reservation_id": rid, "released": True})
        return self._move(rid, ACTIVE, RELEASED, events, order_id=command.order_id, reason=reason)

    def _catalogue_of(self, lines: list[Line]) -> dict[str, StockItem | None]:
        return {pid: self._stock.get(pid) for pid in {line.product_id for line in lines}}

    def _finish(
        self,
        draft: Reservation,
        status: str,
        command: Envelope | None,
        reason: str | None = None,
        detail: str | None = None,
        shortages: list[Shortage] | None = None,
    ) -> Reservation:
        rid = draft.reservation_id
        decided = replace(draft, status=status, reason=reason, detail=detail, shortages=shortages or [])
        moved = self._reservations.transition(
            rid, (RESERVING,), status, now=self._clock(), reason=reason, detail=detail,
            shortages=shortages or (), events=outcome_replies(decided, command),
        )  # fmt: skip
        if moved is None:
            logger.warning("reservation %s was decided by someone else meanwhile", rid)
            return self._settled(self.get_reservation(rid))
        RESERVATIONS.labels(reason or status).inc()
        logger.info("reservation %s of order %s: %s", rid, draft.order_id, detail or status)
        return self._settled(moved)

    def _move(
        self,
        rid: str,
        from_statuses: tuple[str, ...],
        status: str,
        events: list[Envelope],
        *,
        order_id: str | None = None,
        reason: str | None = None,
        known: Reservation | None = None,
    ) -> Reservation | None:
        """Make the transition and return the reservation as moved, or None; when ``known`` (the
        reservation as read) is final already, skip the write: no status leads out of a final one."""
        if known is not None and known.status not in ACTIVE:
            return None
        return self._reservations.transition(
            rid, from_statuses, status, now=self._clock(), order_id=order_id, reason=reason, events=events
        )

    def _fresh(self, reservation: Reservation) -> Reservation:
        """Return the reservation as it is now: a final one never changes, an active one is read again."""
        if reservation.status in ACTIVE:
            return self.get_reservation(reservation.reservation_id)
        return reservation

    def _settled(self, reservation: Reservation) -> Reservation:
        """Make the holds match a final status (sold or returned), drop the timer; return the reservation.
        Give it as stored now: one in a final status may come from any read, as that never changes."""
        if reservation.status in ACTIVE:
            return reservation
        settle_holds(self._stock, reservation, self._clock())
        self._reservations.remove_timer(reservation.reservation_id)
        return reservation

    def _reply_once(self, reservation_id: str, events: list[Envelope]) -> None:
        """Add the replies unless written before: a command's reply id is derived from the command's id."""
        for event in events:
            self._reservations.add_reply(reservation_id, event)

    def _existing(
        self, rid: str, command: Envelope | None, event_type: str, unknown_reply: dict[str, Any]
    ) -> Reservation:
        """Return the reservation; for a command about an unknown one, first record it as released
        (so a late ReserveInventory holds nothing) with ``unknown_reply`` in its outbox."""
        reservation = self._reservations.get(rid)
        if reservation is not None:
            return reservation
        if command is None:
            raise ReservationNotFound(f"reservation {rid} not found")
        record = tombstone(rid, command, self._clock())
        if self._reservations.add(record, replies(command, command.order_id, event_type, unknown_reply)):
            logger.warning("%s for unknown reservation %s; recorded it as released", command.event_type, rid)
        return self.get_reservation(rid)


class InventoryService(Reservations, Catalogue):
    """The catalogue and the reservations over one stock store: what bootstrap builds for the API
    (which uses both) and the worker (reservations only). Built as Reservations is: its stock store
    and clock are the ones the catalogue's methods use."""
