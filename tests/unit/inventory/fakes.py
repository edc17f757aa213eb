"""In-memory fakes of the inventory ports, with the same conditional semantics as the Mongo adapters."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.inventory.domain import Reservation, Shortage, StockItem, price_bounds
from services.inventory.ports import Hold, HoldEnd
from shared.events import Envelope


class FakeClock:
    """A clock tests move by hand; starts at a whole millisecond like Mongo's stored dates."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class InMemoryStockRepository:
    def __init__(self, items: Iterable[StockItem] = ()) -> None:
        self._items = {item.product_id: copy.deepcopy(item) for item in items}
        self._lock = threading.Lock()

    def get(self, product_id: str) -> StockItem | None:
        with self._lock:
            item = self._items.get(product_id)
            return copy.deepcopy(item) if item else None

    def list(self) -> list[StockItem]:
        with self._lock:
            return [copy.deepcopy(self._items[pid]) for pid in sorted(self._items)]

    def is_empty(self) -> bool:
        return not self._items

    def add(self, item: StockItem) -> bool:
        with self._lock:
            if item.product_id in self._items:
                return False
            self._items[item.product_id] = copy.deepcopy(item)
            return True

    def update(
        self, product_id: str, *, name: str | None, price: float | None, restock: int, now: datetime
    ) -> StockItem | None:
        with self._lock:
            item = self._items.get(product_id)
            if item is None:
                return None
            item.name = item.name if name is None else name
            item.price = item.price if price is None else price
            item.available += restock
            item.updated_at = now
            return copy.deepcopy(item)

    def hold(
        self, product_id: str, reservation_id: str, quantity: int, now: datetime, price: float | None = None
    ) -> bool:
        return self.hold_all(product_id, [Hold(reservation_id, quantity, price)], now)

    def release_hold(self, product_id: str, reservation_id: str, quantity: int, now: datetime) -> bool:
        return self.end_all(product_id, [HoldEnd(reservation_id, quantity, committed=False)], now)

    def commit_hold(self, product_id: str, reservation_id: str, quantity: int, now: datetime) -> bool:
        return self.end_all(product_id, [HoldEnd(reservation_id, quantity, committed=True)], now)

    def hold_all(self, product_id: str, holds: Sequence[Hold], now: datetime) -> bool:
        with self._lock:
            item = self._items.get(product_id)
            if item is None or item.available < sum(hold.quantity for hold in holds):
                return False
            for hold in holds:
                if hold.reservation_id in item.holds:
                    return False
                if hold.price is not None:
                    low, high = price_bounds(hold.price)
                    if not low <= item.price <= high:
                        return False
            for hold in holds:
                item.available -= hold.quantity
                item.reserved += hold.quantity
                item.holds[hold.reservation_id] = hold.quantity
            item.updated_at = now if holds else item.updated_at
            return True

    def end_all(self, product_id: str, ends: Sequence[HoldEnd], now: datetime) -> bool:
        with self._lock:
            item = self._items.get(product_id)
            if ends and (item is None or any(end.reservation_id not in item.holds for end in ends)):
                return False
            for end in ends:
                del item.holds[end.reservation_id]
                item.reserved -= end.quantity
                if end.committed:
                    item.sold += end.quantity
                else:
                    item.available += end.quantity
                item.updated_at = now
            return True


class InMemoryReservationRepository:
    def __init__(self) -> None:
        self._docs: dict[str, Reservation] = {}
        self.outboxes: dict[str, dict[str, dict[str, Any]]] = {}
        self._replied: dict[str, set[str]] = {}
        self.timers: dict[str, datetime] = {}
        self.events: list[Envelope] = []  # every event ever put in an outbox, in order
        self._lock = threading.Lock()

    def add(self, reservation: Reservation, events: Iterable[Envelope] = ()) -> bool:
        with self._lock:
            rid = reservation.reservation_id
            if rid in self._docs:
                return False
            self._docs[rid] = copy.deepcopy(reservation)
            self.outboxes[rid], self._replied[rid] = {}, set()
            self._add_events(rid, list(events))
            return True

    def get(self, reservation_id: str) -> Reservation | None:
        with self._lock:
            reservation = self._docs.get(reservation_id)
            return copy.deepcopy(reservation) if reservation else None

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
        with self._lock:
            current = self._docs.get(reservation_id)
            if current is None or current.status not in from_statuses:
                return None
            if order_id is not None and current.order_id != order_id:
                return None
            moved = self._docs[reservation_id] = replace(
                current,
                status=status,
                updated_at=now,
                reason=current.reason if reason is None else reason,
                detail=current.detail if detail is None else detail,
                shortages=list(shortages) or current.shortages,
            )
            self._add_events(reservation_id, list(events))
            return copy.deepcopy(moved)

    def add_reply(self, reservation_id: str, event: Envelope) -> bool:
        with self._lock:
            if reservation_id not in self._docs or event.event_id in self._replied[reservation_id]:
                return False
            self._add_events(reservation_id, [event])
            return True

    def add_timer(self, reservation_id: str, expires_at: datetime) -> None:
        with self._lock:
            self.timers[reservation_id] = expires_at

    def remove_timer(self, reservation_id: str) -> None:
        with self._lock:
            self.timers.pop(reservation_id, None)

    def add_all(self, reservations: Sequence[Reservation]) -> list[bool]:
        return [self.add(reservation) for reservation in reservations]

    def add_timers(self, timers: Sequence[tuple[str, datetime]]) -> None:
        for reservation_id, expires_at in timers:
            self.add_timer(reservation_id, expires_at)

    def remove_timers(self, reservation_ids: Sequence[str]) -> None:
        for reservation_id in reservation_ids:
            self.remove_timer(reservation_id)

    def due_timers(self, now: datetime, limit: int) -> list[str]:
        with self._lock:
            due = sorted((at, rid) for rid, at in self.timers.items() if at <= now)
            return [rid for _at, rid in due[:limit]]

    def replies_to(self, order_id: str) -> list[Envelope]:
        """Return the events emitted for one order, oldest first."""
        return [event for event in self.events if event.order_id == order_id]

    def _add_events(self, reservation_id: str, events: list[Envelope]) -> None:
        for event in events:
            self.outboxes[reservation_id][event.event_id] = event.to_dict()
            self._replied[reservation_id].add(event.event_id)
            self.events.append(event)


class CallLog:
    """Wraps a repository and logs each call as ``"<name>.<method>"``: with the Mongo adapters (and
    no document locks) every repository call is exactly one round trip to the store."""

    def __init__(self, name: str, repository: Any, calls: list[str]) -> None:
        self._name = name
        self._repository = repository
        self._calls = calls

    def __getattr__(self, method: str) -> Any:
        target = getattr(self._repository, method)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(f"{self._name}.{method}")
            return target(*args, **kwargs)

        return call
