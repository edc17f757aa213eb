"""Applying a reservation to stock, one product at a time, with conditional updates only."""

from __future__ import annotations

from datetime import datetime

from services.inventory.domain import COMMITTED, Reservation, Shortage
from services.inventory.ports import StockRepository


def take_holds(stock: StockRepository, reservation: Reservation, now: datetime) -> list[Shortage]:
    """Hold each line in product order; at the first short product stop and report every short one."""
    rid = reservation.reservation_id
    for index, line in enumerate(reservation.items):
        if stock.hold(line.product_id, rid, line.quantity, now):
            continue
        item = stock.get(line.product_id)
        if item is not None and rid in item.holds:
            continue  # an earlier attempt of this reservation took it already
        shortages = [Shortage(line.product_id, line.quantity, item.available if item else 0)]
        for rest in reservation.items[index + 1 :]:
            other = stock.get(rest.product_id)
            if other is None or other.available < rest.quantity:
                shortages.append(Shortage(rest.product_id, rest.quantity, other.available if other else 0))
        return shortages
    return []


def settle_holds(stock: StockRepository, reservation: Reservation, now: datetime) -> None:
    """Turn the reservation's remaining holds into sales (committed) or back into available stock."""
    apply = stock.commit_hold if reservation.status == COMMITTED else stock.release_hold
    for line in reservation.items:
        apply(line.product_id, reservation.reservation_id, line.quantity, now)
