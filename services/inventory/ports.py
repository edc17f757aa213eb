"""What the inventory service needs from storage: stock records and reservations."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

from services.inventory.domain import Reservation, Shortage, StockItem
from shared.events import Envelope


class Hold(NamedTuple):
    """Units of one product held for a reservation, at the price the order gave (None: any)."""

    reservation_id: str
    quantity: int
    price: float | None = None


class HoldEnd(NamedTuple):
    """A reservation's hold of one product, to be sold (committed) or given back to available."""

    reservation_id: str
    quantity: int
    committed: bool


class StockRepository(Protocol):
    """Stock per product. Every change is one atomic, conditional single-document update."""

    def get(self, product_id: str) -> StockItem | None:
        """Return the product's stock, or None when it is unknown."""

    def list(self) -> list[StockItem]:
        """Return every product, sorted by product id."""

    def is_empty(self) -> bool:
        """Return True when no product exists at all."""

    def add(self, item: StockItem) -> bool:
        """Insert a new product; return False (changing nothing) when it already exists."""

    def update(
        self, product_id: str, *, name: str | None, price: float | None, restock: int, now: datetime
    ) -> StockItem | None:
        """Set name/price when given and add ``restock`` units to available; None when unknown."""

    def hold(
        self, product_id: str, reservation_id: str, quantity: int, now: datetime, price: float | None = None
    ) -> bool:
        """Move ``quantity`` available units to reserved for the reservation, if enough are available,
        it holds none of this product yet and (when ``price`` is given) the product's price matches it
        to the cent (domain.price_matches); return whether this call moved them."""

    def release_hold(self, product_id: str, reservation_id: str, quantity: int, now: datetime) -> bool:
        """Give the reservation's held units back to available; return whether there was a hold."""

    def commit_hold(self, product_id: str, reservation_id: str, quantity: int, now: datetime) -> bool:
        """Turn the reservation's held units into sold ones; return whether there was a hold."""

    def hold_all(self, product_id: str, holds: Sequence[Hold], now: datetime) -> bool:
        """Take every hold on the product in one write, or none: only if enough units are available
        for all of them, none of their reservations holds the product yet and its price matches
        every hold's price; return whether they were taken."""

    def end_all(self, product_id: str, ends: Sequence[HoldEnd], now: datetime) -> bool:
        """Settle every one of the product's holds in one write (sold when ``committed``, back to
        available otherwise), or none when any of them is not there; return whether they were."""


class ReservationRepository(Protocol):
    """Reservations with their outbox of replies, and the timers of the active ones."""

    def add(self, reservation: Reservation, events: Iterable[Envelope] = ()) -> bool:
        """Insert the reservation with ``events`` in its outbox; False when the id exists already."""

    def get(self, reservation_id: str) -> Reservation | None:
        """Return the reservation, or None when it is unknown."""

    def transition(
        self,
        reservation_id: str,
        from_statuses: Sequence[str],
        status: str,
        *,
        now: datetime,
        order_id: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
        shortages: Sequence[Shortage] = (),
        events: Iterable[Envelope] = (),
    ) -> Reservation | None:
        """Move to ``status`` with ``events`` in the outbox, only from ``from_statuses`` (and only when
        it is ``order_id``'s, if given); return the reservation as moved, or None when it did not move."""

    def add_reply(self, reservation_id: str, event: Envelope) -> bool:
        """Put ``event`` in the outbox unless an event with its id was ever added; return whether added."""

    def add_timer(self, reservation_id: str, expires_at: datetime) -> None:
        """Remember when the reservation expires (idempotent)."""

    def remove_timer(self, reservation_id: str) -> None:
        """Forget the reservation's timer (idempotent)."""

    def add_all(self, reservations: Sequence[Reservation]) -> list[bool]:
        """Insert the reservations (no events) in one round trip; return whether each was new."""

    def add_timers(self, timers: Sequence[tuple[str, datetime]]) -> None:
        """Remember when each reservation expires, in one round trip (idempotent)."""

    def remove_timers(self, reservation_ids: Sequence[str]) -> None:
        """Forget the reservations' timers, in one round trip (idempotent)."""

    def due_timers(self, now: datetime, limit: int) -> list[str]:
        """Return ids of reservations whose timer expired at or before ``now``, earliest first."""
